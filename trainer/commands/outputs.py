"""Where a command writes: a file where a file goes, a folder where a folder goes, said in one line.

A command told to write a file over an existing folder (``make_bin output=<folder>``) or a
folder over an existing file (``data.convert output=<file>``) failed deep inside the writer;
each command checks its ``output=`` here first, before any work.
"""

from __future__ import annotations

import os

from trainer.registry import ConfigError


def _kind(path: str) -> str | None:
    """``file``, ``folder`` or None (nothing there), local or ``scheme://``."""
    if "://" in path:
        import tensorflow as tf

        if not tf.io.gfile.exists(path):
            return None
        return "folder" if tf.io.gfile.isdir(path) else "file"
    if not os.path.lexists(path):
        return None
    return "folder" if os.path.isdir(path) else "file"


def output_file(path, key: str = "output") -> str:
    """``path`` where a command writes one file: not an existing folder."""
    path = str(path)
    if _kind(path) == "folder":
        raise ConfigError(f"{key}={path} is a folder; give the file to write, e.g. {key}="
                          f"{os.path.join(path, 'out' + (os.path.splitext(path)[1] or '.bin'))}")
    return path


def output_folder(path, key: str = "output") -> str:
    """``path`` where a command writes a folder of files: not an existing file."""
    path = str(path)
    if _kind(path) == "file":
        raise ConfigError(f"{key}={path} is a file; give a folder to write into (it is created if needed)")
    return path
