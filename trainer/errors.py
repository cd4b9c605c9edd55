"""What every error report shares: the one line of an exception worth showing.

Imports nothing from the framework, so components, data sources and commands
alike can use it without an import cycle.
"""

from __future__ import annotations

__all__ = ["first_line"]


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
            return line.strip()
    return type(error).__name__
