"""Moved to ``trainer.io``, the one module for local and remote files.

Only the names callers still import are re-exported, until they import from
``trainer.io`` (``save_with`` is ``trainer.io.save_file``); then this module goes.
It imports from ``trainer.io`` and never the other way, so there is no cycle.
"""

from trainer.io import finite_or_none, read_json, write_json, write_text  # noqa: F401
from trainer.io import save_file as save_with  # noqa: F401
