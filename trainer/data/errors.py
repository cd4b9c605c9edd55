"""Errors in the user's data, reported in one line."""

import re

from trainer.registry import ConfigError

# A DataError raised by the framework's Python inside tf.data (``tf.py_function``) reaches the
# caller as a TensorFlow error whose message holds "DataError: <the line>".
_INSIDE = re.compile(r"\bDataError: ([^\n]+)")


class DataError(ConfigError):
    """Missing, corrupt or inconsistent input data; the message says what and where."""


def data_error_inside(error: BaseException) -> "DataError | None":
    """The ``DataError`` a data source raised inside ``tf.data``, carried by ``error``; None if none."""
    if isinstance(error, DataError):
        return error
    if type(error).__module__.startswith("tensorflow"):
        found = _INSIDE.search(str(error))
        if found:
            return DataError(found.group(1).strip())
    return None
