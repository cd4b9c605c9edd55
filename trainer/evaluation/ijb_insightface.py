"""IJB-B/C numbers defined as insightface's evaluation scripts compute them.

Published IJB tables (arcface_torch's model zoo, most papers since 2019) come
from ``recognition/_evaluation_/ijb/`` of insightface. Its definitions differ
from the textbook ones (``trainer.evaluation.ijb``, ``ijb.protocol=exact``) in
ways that move the numbers, so this module reproduces them (our own code, the
scripts' rules):

1:1 (``ijb_11.py``): the ROC is scikit-learn's ``roc_curve`` with its default
``drop_intermediate=True`` (one point per distinct score, then every point that
is not a corner of the curve dropped, then (0, 0) prepended). TAR at FAR f is
the TAR of the remaining point whose FPR is nearest to f; among equally near
points the one with the larger FPR, then the larger TPR, wins (the scripts
search the flipped curve and keep the first minimum). A FAR below
1/negatives therefore reads the point at FPR 0 (no negative accepted), or the
first negative's point when that is nearer.

1:N per gallery (``ijb_evals.py``): the gallery is a list of templates; a
probe whose subject holds a gallery template is mated, and its mate is the
first such template (lowest template id). Rank-k: the mate is among the k
best-scoring templates, equal scores ordered by a stable sort reversed (the
later template first). TPIR at FPIR f: share of mated probes whose mate scores
above every other subject's template and above the threshold, the
max(int(N·f), 1)-th best of the N non-mated probes' best scores, so the
threshold lets one false alarm fewer than int(N·f) through. The FPIRs are the
script's grid values 10**(-4 + 0.04·i) (1e-2 is 0.01000000000000004 there).
Mean over galleries: rank-k is all galleries' hits over all probe templates;
TPIR is the plain mean.

1:N over the union of galleries (``ijb_1n.py``): every probe is searched
against G1 ∪ G2 (each probe's subject must hold exactly one template there).
Rank-k over all probes, equal scores ordered by a stable sort (the earlier
template first). "TPR at FAR" f: share of probes whose mate scores above the
ceil(P·f)-th best of all non-mate probe–template scores.
"""

from __future__ import annotations

import math

import numpy as np

# ijb_evals.py evaluates 1:N at FPIR = 10**x on this grid and shows every 25th point.
FPIR_GRID = 10.0 ** np.arange(-4, 0, 4 / 100)
UNION_FARS = (1e-2, 1e-1)  # what ijb_1n.py prints


# -- 1:1 ------------------------------------------------------------------------------

def reduced_roc(scores: np.ndarray, labels: np.ndarray):
    """(FPR, TPR) ascending as scikit-learn's ``roc_curve(labels, scores)`` with its defaults.

    Higher score = more alike. None when the pairs hold no negatives or no positives.
    """
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels, bool)
    if labels.all() or not labels.any():
        return None
    # One operating point per distinct score, highest score first.
    _, group = np.unique(-scores, return_inverse=True)
    true_accepts = np.cumsum(np.bincount(group, weights=labels))
    false_accepts = np.cumsum(np.bincount(group, weights=~labels))
    if len(true_accepts) > 2:
        # A point stays when the curve turns there (second differences non-zero), plus both ends.
        turns = (np.diff(false_accepts, 2) != 0) | (np.diff(true_accepts, 2) != 0)
        keep = np.r_[True, turns, True]
        true_accepts, false_accepts = true_accepts[keep], false_accepts[keep]
    false_accepts, true_accepts = np.r_[0.0, false_accepts], np.r_[0.0, true_accepts]
    return false_accepts / false_accepts[-1], true_accepts / true_accepts[-1]


def nearest_point(fpr: np.ndarray, far: float) -> int:
    """Index of the ROC point whose FPR is nearest ``far``; on a tie the later point (larger FPR, TPR)."""
    flipped = np.abs(fpr[::-1] - far)
    return len(fpr) - 1 - int(np.argmin(flipped))


def tar_at_far(scores: np.ndarray, labels: np.ndarray, fars) -> dict:
    """``{"tar_at_far": {"1e-04": TAR}, "far_of_point": {...}, "notes": [...]}`` by ijb_11.py's rule."""
    labels = np.asarray(labels, bool)
    negatives = int((~labels).sum())
    keys = [f"{far:.0e}" for far in fars]
    roc = reduced_roc(scores, labels)
    if roc is None:
        return {"tar_at_far": dict.fromkeys(keys), "far_of_point": dict.fromkeys(keys),
                "notes": ["no positive or no negative pairs: no ROC"]}
    fpr, tpr = roc
    tars, used, notes = {}, {}, []
    for key, far in zip(keys, fars):
        point = nearest_point(fpr, far)
        tars[key], used[key] = float(tpr[point]), float(fpr[point])
        if far * negatives < 1:
            notes.append(f"FAR {key} is below 1/{negatives} negatives: reported, as insightface does, at "
                         f"the nearest ROC point, FAR {fpr[point]:.3g}")
    return {"tar_at_far": tars, "far_of_point": used, "notes": notes}


# -- 1:N per gallery (ijb_evals.py) -------------------------------------------------------

def grid_fpir(fpir: float) -> float:
    """ijb_evals.py's own value for ``fpir`` (the nearest point of its 10**x grid)."""
    return float(FPIR_GRID[int(np.argmin(np.abs(np.log10(FPIR_GRID) - np.log10(fpir))))])


def gallery_search(probe_features, probe_subjects, gallery_features, gallery_subjects, ranks, fpirs) -> dict:
    """One gallery by ijb_evals.py's rules: hit counts per rank, mated/non-mated counts, TPIR per FPIR.

    Features are L2-normalised template features; galleries are template lists
    (a subject may hold several templates; the first one is its mate).
    """
    probe_subjects = np.asarray(probe_subjects, np.int64)
    gallery_subjects = np.asarray(gallery_subjects, np.int64)
    similarity = np.asarray(probe_features, np.float64) @ np.asarray(gallery_features, np.float64).T
    first_template = {}
    for index, subject in enumerate(gallery_subjects.tolist()):
        first_template.setdefault(subject, index)
    mate = np.asarray([first_template.get(s, -1) for s in probe_subjects.tolist()], np.int64)
    mated = mate >= 0
    rows = np.flatnonzero(mated)
    mate_score = similarity[rows, mate[rows]]
    # Rank in argsort(scores)[::-1] with a stable sort: higher scores first, then later templates.
    columns = np.arange(similarity.shape[1])[None, :]
    ahead = (similarity[rows] > mate_score[:, None]) | (
        (similarity[rows] == mate_score[:, None]) & (columns > mate[rows][:, None]))
    position = 1 + ahead.sum(axis=1)
    other_subject = gallery_subjects[None, :] != probe_subjects[rows][:, None]
    best_other = np.where(other_subject, similarity[rows], -np.inf).max(axis=1, initial=-np.inf)
    non_mated_best = np.sort(similarity[~mated].max(axis=1, initial=-np.inf))[::-1]
    report = {"mated": int(mated.sum()), "non_mated": int((~mated).sum()),
              "hits": {str(k): int(np.sum(position <= k)) for k in ranks}, "tpir_at_fpir": {}}
    report["rank"] = {k: (hits / len(rows) if len(rows) else None) for k, hits in report["hits"].items()}
    for fpir in fpirs:
        key = f"{fpir:.0e}"
        if not len(non_mated_best) or not len(rows):
            report["tpir_at_fpir"][key] = None
            continue
        threshold = non_mated_best[max(int(len(non_mated_best) * grid_fpir(fpir)) - 1, 0)]
        hit = (mate_score > best_other) & (mate_score > threshold)
        report["tpir_at_fpir"][key] = float(np.sum(hit) / len(rows))
    return report


def mean_over_galleries(reports: list, probes: int) -> dict:
    """ijb_evals.py's mean: rank-k is every gallery's hits over all probes; TPIR the plain mean."""
    def mean(values):
        values = [x for x in values if x is not None]
        return float(np.mean(values)) if values else None

    first = reports[0]
    return {"probes": int(probes),
            "rank": {k: (sum(r["hits"][k] for r in reports) / probes if probes else None) for k in first["hits"]},
            "tpir_at_fpir": {k: mean([r["tpir_at_fpir"][k] for r in reports]) for k in first["tpir_at_fpir"]}}


# -- 1:N over the union of galleries (ijb_1n.py) -----------------------------------------------

def union_search(probe_features, probe_subjects, gallery_features, gallery_subjects, ranks,
                 fars=UNION_FARS) -> dict:
    """Closed-set search of every probe in one gallery that holds exactly one template per subject.

    Returns rank-k over all probes and ``tpr_at_far``; ``{"skipped": why}`` when a
    probe's subject holds no template or several there (ijb_1n.py stops on it).
    """
    probe_subjects = np.asarray(probe_subjects, np.int64)
    gallery_subjects = np.asarray(gallery_subjects, np.int64)
    subjects, counts = np.unique(gallery_subjects, return_counts=True)
    held = dict(zip(subjects.tolist(), counts.tolist()))
    wrong = [s for s in probe_subjects.tolist() if held.get(s, 0) != 1]
    if wrong:
        return {"skipped": f"{len(wrong)} probes' subjects hold no template or several in the joined "
                           f"galleries (e.g. subject {wrong[0]}); the union search needs exactly one"}
    index_of = {s: i for i, s in enumerate(gallery_subjects.tolist())}
    mate = np.asarray([index_of[s] for s in probe_subjects.tolist()], np.int64)
    similarity = np.asarray(probe_features, np.float64) @ np.asarray(gallery_features, np.float64).T
    rows = np.arange(len(mate))
    mate_score = similarity[rows, mate]
    # Rank in a stable argsort of -scores: higher scores first, then earlier templates.
    columns = np.arange(similarity.shape[1])[None, :]
    ahead = (similarity > mate_score[:, None]) | ((similarity == mate_score[:, None]) & (columns < mate[:, None]))
    position = 1 + ahead.sum(axis=1)
    probes = len(mate)
    report = {"probes": int(probes), "gallery_templates": int(len(gallery_subjects)),
              "rank": {str(k): float(np.mean(position <= k)) for k in ranks}, "tpr_at_far": {}}
    non_mate = similarity.copy()
    non_mate[rows, mate] = -np.inf
    non_mate = np.sort(non_mate[np.isfinite(non_mate)])[::-1]
    for far in fars:
        needed = math.ceil(probes * far)  # Python floats, as the script computes it
        key = f"{far:.0e}"
        if needed < 1 or needed > len(non_mate):
            report["tpr_at_far"][key] = None
            continue
        report["tpr_at_far"][key] = float(np.sum(mate_score > non_mate[needed - 1]) / probes)
    return report
