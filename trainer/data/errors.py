"""Errors in the user's data, reported in one line."""

from trainer.registry import ConfigError


class DataError(ConfigError):
    """Missing, corrupt or inconsistent input data; the message says what and where."""
