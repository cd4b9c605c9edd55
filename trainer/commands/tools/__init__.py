"""Command-line tools (python -m trainer.tools.<name>)."""
