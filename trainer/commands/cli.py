"""The older hand-written ``key=value`` plumbing, kept only for ``python -m trainer.testing`` and
``python -m trainer.evaluation.ijb_synthetic`` until they move to ``command_config`` and ``edge``
(every command in trainer/commands/ uses those: conf/<command>.yaml, one failure contract)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable

from trainer.registry import ConfigError, did_you_mean


HELP_FLAGS = ("-h", "--help")


def start_command(argv: Iterable[str], doc: str | None) -> bool:
    """The common start of every command: True when ``--help`` was asked and answered.

    Otherwise the console is made quiet (library banners filtered) before
    anything imports TensorFlow.
    """
    if any(argument in HELP_FLAGS for argument in argv):
        print((doc or "").strip())
        return True
    from trainer.console import quiet_startup

    quiet_startup()
    return False


def split_arguments(argv: Iterable[str], options: Iterable[str], usage: str,
                    pass_through: Callable[[str], bool] = lambda key: False):
    """``key=value`` arguments → (the command's own options, the rest as Hydra overrides).

    A bare word, or a key that is neither an option nor passed through, is a
    ``ConfigError`` naming the nearest option.
    """
    options = tuple(options)
    own, rest = {}, []
    for argument in argv:
        key, sep, value = argument.partition("=")
        if not sep:
            raise ConfigError(f"unexpected argument {argument!r}; {usage}")
        if key in options:
            own[key] = None if value in ("", "null", "None") else value
        elif pass_through(key):
            rest.append(argument)
        else:
            raise ConfigError(f"unknown option '{key}': {did_you_mean(key, options)}; {usage}")
    return own, rest


def run_command(body: Callable[[], str | None]) -> int:
    """Run a command's body; a user mistake is one ``error:`` line and exit status 2."""
    try:
        message = body()
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if message:
        print(message)
    return 0
