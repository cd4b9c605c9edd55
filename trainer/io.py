"""File operations that work on local paths and on ``gs://`` (any ``scheme://``) paths.

Local paths use ``os`` (atomic rename, no TensorFlow needed). Remote paths go
through ``tf.io.gfile`` (GCS, S3 via plugins, and ``ram://`` for tests). On an
object store an object appears whole or not at all, so "write to a temporary
local file, then upload" is the atomic write there.
"""

from __future__ import annotations

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
    from trainer.atomic import write_text as write_local

    write_local(path, text)


def save_file(path: str, save) -> None:
    """``save(local_temporary_path)`` then move (local) or upload (remote) it to ``path``."""
    if not is_remote(path):
        from trainer.atomic import save_with

        save_with(path, save)
        return
    gfile = _gfile()
    folder = tempfile.mkdtemp(prefix="facetrain-")
    try:
        local = os.path.join(folder, os.path.basename(path))
        save(local)
        gfile.makedirs(path.rsplit("/", 1)[0])
        gfile.copy(local, path, overwrite=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


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
