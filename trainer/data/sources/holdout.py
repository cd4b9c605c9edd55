"""Which identities of a folder data set are kept out of training for evaluation, and what that buys.

A held-out accuracy is only as good as the people and pairs behind it: two
people give a number, not an estimate. ``holdout: auto`` therefore keeps 10 %
of the identities (at most 100), but at least ``MEANINGFUL_IDENTITIES`` when
the data can spare them without giving up more than ``AUTO_MAX_SHARE`` of its
people. When the held-out set is still below ``MEANINGFUL_IDENTITIES``
identities or ``MEANINGFUL_POSITIVE_PAIRS`` distinct positive pairs, one line
before training says what was held out and that the number is weak.
"""

from __future__ import annotations

import numpy as np

from trainer.data.errors import DataError

AUTO_HOLDOUT_SHARE, AUTO_HOLDOUT_MAX = 0.1, 100
AUTO_MAX_SHARE = 0.25           # auto never holds out more than this share of the people
MEANINGFUL_IDENTITIES = 20      # fewer held-out people: the accuracy is a weak estimate
MEANINGFUL_POSITIVE_PAIRS = 500  # fewer distinct positive pairs: likewise
MIN_HOLDOUT = 2  # verification pairs need two people, each with two photos


def auto_count(identities: int) -> int:
    """How many identities ``holdout: auto`` keeps out of ``identities``."""
    floor = min(MEANINGFUL_IDENTITIES, int(identities * AUTO_MAX_SHARE))
    return min(AUTO_HOLDOUT_MAX, max(int(identities * AUTO_HOLDOUT_SHARE), floor))


def choose_holdout(names: list[str], labels: list[int], holdout, seed: int):
    """Identities kept out of training for evaluation: (their names, or [], and why not, or None).

    ``holdout``: ``auto`` (see ``auto_count``), a count, or 0. Only identities
    with two or more images are eligible; the draw is seeded, so every run of
    the same data holds out the same people.
    """
    counts = np.bincount(np.asarray(labels, np.int64), minlength=len(names))
    eligible = np.flatnonzero(counts >= 2)
    if holdout in (None, "auto"):
        wanted = min(auto_count(len(names)), len(eligible))
    else:
        try:
            wanted = int(holdout)
        except (TypeError, ValueError):
            raise DataError(f"data.holdout={holdout!r} is not a number of identities; use auto, 0 "
                            "or a count such as 50") from None
        if wanted < 0:
            raise DataError(f"data.holdout={wanted} is negative; use auto, 0 or a count")
    if wanted == 0 and holdout not in (None, "auto"):
        return [], "data.holdout=0"
    if wanted < MIN_HOLDOUT or len(eligible) < MIN_HOLDOUT or len(names) - wanted < 2:
        return [], (f"{len(names)} identities ({len(eligible)} with two or more images) are too few "
                    f"to hold out {max(wanted, MIN_HOLDOUT)} for evaluation and still train on two")
    if wanted > len(eligible):
        raise DataError(f"data.holdout={wanted} but only {len(eligible)} identities have two or more "
                        "images; lower data.holdout")
    chosen = np.random.default_rng(seed).choice(eligible, size=wanted, replace=False)
    return [names[i] for i in sorted(chosen.tolist())], None


def weak_estimate_line(heldout_labels, training_identities: int, how: str) -> str | None:
    """One line when the held-out set is too small for a meaningful accuracy; None when it is not.

    ``how`` says where the held-out people came from (``data.holdout=auto``, ``data.heldout_path=...``).
    """
    sizes = np.unique(np.asarray(heldout_labels, np.int64), return_counts=True)[1]
    identities, images = len(sizes), int(sizes.sum())
    positives = int(np.sum(sizes * (sizes - 1) // 2))
    negatives = images * (images - 1) // 2 - positives
    if identities >= MEANINGFUL_IDENTITIES and positives >= MEANINGFUL_POSITIVE_PAIRS:
        return None
    return (f"note: {how} holds out {identities} identities ({images} images: {positives} distinct positive "
            f"and {negatives} negative pairs) for evaluation, {training_identities} identities train; the "
            f"held-out accuracy is a weak estimate (below {MEANINGFUL_IDENTITIES} identities or "
            f"{MEANINGFUL_POSITIVE_PAIRS} positive pairs): add people with data.heldout_path=... or "
            f"evaluate on a .bin (python -m trainer.evaluate bin_files=[...])")
