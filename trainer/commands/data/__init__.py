"""Data commands (``python -m trainer.data.convert``, ``trainer.data.align``): ``trainer/data``
adds this folder to its search path."""
