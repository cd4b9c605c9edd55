"""What every error report shares: the one line of an exception worth showing.

Imports nothing from the framework, so components, data sources and commands
alike can use it without an import cycle.
"""

from __future__ import annotations

import re

__all__ = ["first_line"]

# TensorFlow wraps an op's message in where it ran: ``{{function_node __wrapped__X_device_...}} the
# message [Op:X] name: ``. The user needs the message.
_TF_WRAPPING = re.compile(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:[^\]]*\](?: name: \S*)?\s*$")


def first_line(error: BaseException) -> str:
    """The first non-blank line of ``error``'s message, stripped.

    An exception with an empty message (``raise X from cause`` with no text)
    says nothing, so the innermost cause that does say something is used; with
    no text anywhere the line is the exception's type name.
    """
    while not str(error).strip() and error.__cause__ is not None:
        error = error.__cause__
    for line in str(error).splitlines():
        if line.strip():
            return _TF_WRAPPING.sub("", line).strip() or line.strip()
    return type(error).__name__
