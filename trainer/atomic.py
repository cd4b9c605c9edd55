"""Write files so that a reader never sees half of one: temp file, then rename."""

from __future__ import annotations

import json
import os
import tempfile


def write_text(path: str, text: str) -> None:
    if "://" in str(path):  # gs:// and other object stores: one upload (trainer.io)
        from trainer import io

        return io.write_text(path, text)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(handle, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def write_json(path: str, value) -> None:
    write_text(path, json.dumps(value, indent=2, sort_keys=False, default=_plain) + "\n")


def read_json(path: str, default=None):
    try:
        if "://" in str(path):
            from trainer import io

            return json.loads(io.read_text(path)) if io.exists(path) else default
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def save_with(path: str, save) -> None:
    """Call ``save(temporary_path)`` then move the result into place."""
    if "://" in str(path):  # saved locally, then uploaded as one object (trainer.io)
        from trainer import io

        return io.save_file(path, save)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    name = os.path.basename(path)
    temporary = os.path.join(folder, f".tmp-{os.getpid()}-{name}")
    try:
        save(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _plain(value):
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(value)
