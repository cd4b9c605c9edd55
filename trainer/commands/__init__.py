"""The applications built on the library: one module (or package) per command.

Users spell them ``python -m trainer.<command>``: ``trainer/__init__.py`` adds this folder to the
``trainer`` package's search path, so ``trainer.evaluate`` and ``trainer.commands.evaluate`` are the
same file.
"""
