"""Every file the framework writes or reads, on local paths and on ``gs://`` (any ``scheme://``) paths.

Local paths use ``os`` (no TensorFlow needed). Remote paths go through
``tf.io.gfile`` (GCS, S3 via plugins, and ``ram://`` for tests).

Writes are whole or nothing, so a reader never sees half a file and a crash
leaves the old version or the new one: a local write goes to a temporary file in
the same folder, is synced, then renamed over the target; on an object store an
object appears whole, so "write beside, then rename" (text) or "write a local
temporary, then upload" (files a library saves) is the atomic write there.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile


def is_remote(path: str) -> bool:
    return "://" in str(path)


def _gfile():
    try:
        import tensorflow as tf
    except ImportError as error:
        raise RuntimeError(f"remote paths (gs://...) need tensorflow's tf.io.gfile, which does not "
                           f"import here ({error}); use a local run directory") from None
    return tf.io.gfile


def join(*parts: str) -> str:
    if parts and is_remote(parts[0]):
        return "/".join([parts[0].rstrip("/"), *(p.strip("/") for p in parts[1:])])
    return os.path.join(*parts)


def exists(path: str) -> bool:
    return _gfile().exists(path) if is_remote(path) else os.path.exists(path)


def makedirs(path: str) -> None:
    if is_remote(path):
        _gfile().makedirs(path)
    else:
        os.makedirs(path, exist_ok=True)


def listdir(path: str) -> list[str]:
    if is_remote(path):
        gfile = _gfile()
        return [name.rstrip("/") for name in gfile.listdir(path)] if gfile.exists(path) else []
    return os.listdir(path) if os.path.isdir(path) else []


def remove(path: str) -> None:
    if is_remote(path):
        _gfile().remove(path)
    else:
        os.remove(path)


def read_text(path: str) -> str:
    if is_remote(path):
        with _gfile().GFile(path, "r") as f:
            return f.read()
    with open(path) as f:
        return f.read()


def write_text(path: str, text: str) -> None:
    """Whole or nothing: a temporary file renamed into place (local) or one object upload."""
    if is_remote(path):
        # Written beside, then renamed over the target: on GCS the rename is a copy that
        # replaces the object whole; readers see the old or the new text, never a mix.
        gfile = _gfile()
        folder, name = path.rsplit("/", 1)
        gfile.makedirs(folder)
        temporary = f"{folder}/.tmp-{os.getpid()}-{name}"
        with gfile.GFile(temporary, "w") as f:
            f.write(text)
        gfile.rename(temporary, path, overwrite=True)
        return
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    # named with the writer's pid: a job removes leftovers only of writers that died (trainer.run_dir)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".tmp-{os.getpid()}-", suffix=os.path.basename(path))
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
    """Strict JSON, written whole: NaN and infinities (not JSON) are written as null."""
    text = json.dumps(finite_or_none(value), indent=2, sort_keys=False, default=_plain, allow_nan=False)
    write_text(path, text + "\n")


def read_json(path: str, default=None):
    """The parsed file, or ``default`` when it is missing or not JSON."""
    try:
        if is_remote(path):
            return json.loads(read_text(path)) if exists(path) else default
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


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


def save_file(path: str, save) -> None:
    """``save(local_temporary_path)``, then move (local) or upload (remote) the result to ``path``."""
    if is_remote(path):
        gfile = _gfile()
        folder = tempfile.mkdtemp(prefix="facetrain-")
        try:
            local = os.path.join(folder, os.path.basename(path))
            save(local)
            gfile.makedirs(path.rsplit("/", 1)[0])
            gfile.copy(local, path, overwrite=True)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    temporary = os.path.join(folder, f".tmp-{os.getpid()}-{os.path.basename(path)}")
    try:
        save(temporary)
        _sync(temporary)  # on disk before it takes the final name: a crash leaves the old or the new
        os.replace(temporary, path)
        _sync(folder)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def load_file(path: str, load):
    """``load(local_path)``; a remote file is downloaded to a temporary copy first."""
    if not is_remote(path):
        return load(path)
    folder = tempfile.mkdtemp(prefix="facetrain-")
    try:
        local = os.path.join(folder, os.path.basename(path))
        _gfile().copy(path, local, overwrite=True)
        return load(local)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


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
    """JSON for what ``json`` does not know: NumPy scalars and arrays, else the text."""
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
