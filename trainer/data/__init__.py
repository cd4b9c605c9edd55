"""Data sets and input pipelines."""

import os as _os

# ``python -m trainer.data.convert`` lives in trainer/commands/data/ (see trainer/__init__.py).
__path__.append(_os.path.join(_os.path.dirname(_os.path.dirname(__file__)), "commands", "data"))
