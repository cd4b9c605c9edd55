"""Which people a model was trained on, kept in its run folder, so evaluation can refuse to flatter it.

``<run>/identities.json`` holds the names of the training identities (and the
held-out ones) of a data source that has names (identity folders). ``python -m
trainer.evaluate folder=...`` reads it beside ``<run>/export/embedding.keras``
and warns when the folder holds people the model has seen: their pairs measure
memory, not recognition of strangers.
"""

from __future__ import annotations

import os

IDENTITIES_FILE = "identities.json"


def record(source, run_dir: str) -> str | None:
    """Write ``<run_dir>/identities.json`` when ``source`` names its identities; returns its path."""
    from trainer import io

    names = getattr(source, "identities", None)
    if not names or not run_dir:
        return None
    path = io.join(run_dir, IDENTITIES_FILE)
    io.write_json(path, {"training": list(names),
                         "heldout": list(getattr(source, "heldout_identities", None) or [])})
    return path


def training_names(model_path: str) -> set[str] | None:
    """Training identities of the run that exported ``model_path`` (``<run>/<folder>/model``), or None."""
    from trainer import io

    run_dir = os.path.dirname(os.path.dirname(os.path.abspath(str(model_path))))
    recorded = io.read_json(os.path.join(run_dir, IDENTITIES_FILE))
    if not isinstance(recorded, dict) or not isinstance(recorded.get("training"), list):
        return None
    return set(recorded["training"])


def overlap_warning(model_path: str, folder: str, names) -> str | None:
    """A warning line when ``folder``'s identities include people ``model_path`` was trained on."""
    trained = training_names(model_path)
    if not trained:
        return None
    seen = sorted(set(names) & trained)
    if not seen:
        return None
    examples = ", ".join(seen[:3]) + (", ..." if len(seen) > 3 else "")
    return (f"warning: {len(seen)} of the {len(set(names))} identities in {folder} were in this model's "
            f"training data ({examples}); their pairs flatter the model. Evaluate on people it has not "
            f"seen (its run's held-out identities are listed in {IDENTITIES_FILE})")
