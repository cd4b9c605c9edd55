"""Write files so that a reader never sees half of one: temp file, then rename."""

from __future__ import annotations

import json
import math
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
        os.chmod(temporary, 0o666 & ~_UMASK)  # mkstemp's 0600 would make results private
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
    """Strict JSON: NaN and infinities (not JSON) are written as null."""
    text = json.dumps(finite_or_none(value), indent=2, sort_keys=False, default=_plain, allow_nan=False)
    write_text(path, text + "\n")


def finite_or_none(value):
    """``value`` with every non-finite float (also NumPy's) replaced by None, recursively."""
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    if isinstance(value, float) or type(value).__name__.startswith("float"):
        number = float(value)
        return number if math.isfinite(number) else None
    return value


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
        _sync(temporary)  # on disk before it takes the final name: a crash leaves the old or the new
        os.replace(temporary, path)
        _sync(folder)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _sync(path: str) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    except OSError:  # some file systems cannot sync a folder
        pass
    finally:
        os.close(descriptor)


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
