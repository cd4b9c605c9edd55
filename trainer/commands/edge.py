"""How every command ends: the failure contract at the command's edge (README: When things go wrong).

Every exception that leaves a command is classified once, here:

* a user or data mistake (``ConfigError``, the data errors, ``RunFailed``): one ``error:`` line,
  exit status 2;
* an interruption: exit status 130 (SIGINT, Ctrl-C) or 143 (SIGTERM);
* anything else is a bug: one line naming the file that holds the full traceback, exit status 1.

The traceback always goes to the command's log (``<run>/train.log`` for training, the output
folder's ``<command>.log`` for the others), and to the console only with ``FACETRAIN_DEBUG=1``.
"""

from __future__ import annotations

import errno
import sys
import traceback
from collections.abc import Callable

EXIT_BUG, EXIT_MISTAKE, EXIT_SIGINT, EXIT_SIGTERM = 1, 2, 130, 143


# A folder the user pointed at that cannot be written: read-only, not theirs, or full.
UNWRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT}


def is_mistake(error: BaseException) -> bool:
    """A mistake the user can fix from its one line (config, data, a refused run, an unwritable folder)."""
    from trainer.registry import ConfigError

    if _data_error(error) is not None:  # a data source's error raised inside tf.data
        return True
    # RunFailed lives with the runner, which imports TensorFlow: only a loaded runner can raise it.
    run = sys.modules.get("trainer.run")
    # Hydra's composition errors (with --multirun or --cfg, Hydra composes on its own)
    hydra = sys.modules.get("hydra.errors")
    return isinstance(error, (ConfigError, getattr(run, "RunFailed", ConfigError),
                              getattr(hydra, "HydraException", ConfigError))) or (
        isinstance(error, OSError) and error.errno in UNWRITABLE)


def _data_error(error: BaseException):
    # TensorFlow (and so tf.data) is loaded only when a command read data: only then can it carry one.
    errors = sys.modules.get("trainer.data.errors")
    return errors.data_error_inside(error) if errors is not None else None


def mistake_line(error: BaseException) -> str:
    from trainer.errors import first_line

    inside = _data_error(error)
    if inside is not None:
        return str(inside)
    if isinstance(error, OSError) and error.errno in UNWRITABLE:
        # h5py's message spans lines and names the file only inside it ("filename = '...'")
        import os
        import re

        named = re.search(r"filename = '([^']+)'", str(error))
        filename = error.filename or (named.group(1) if named else None)
        where = f": {filename}" if filename else ""
        return (f"cannot write{where} ({os.strerror(error.errno)}); choose a folder you can write, "
                "with free space")
    return first_line(error)


def interruption_status(error: BaseException) -> int | None:
    """130 for SIGINT, 143 for SIGTERM, None when ``error`` is no interruption."""
    if not isinstance(error, KeyboardInterrupt):
        return None
    if getattr(error, "exit_code", None) in (EXIT_SIGINT, EXIT_SIGTERM):  # trainer.signals.Interrupted
        return error.exit_code
    signum = getattr(error, "signum", None)
    if signum == 15 or (signum is None and type(error).__name__ == "Terminated"):
        return EXIT_SIGTERM
    return EXIT_SIGINT


def finish(command: str, error: BaseException) -> int:
    """Report ``error`` under the contract; returns the exit status."""
    from trainer.console import command_log, debugging
    from trainer.errors import first_line

    log = command_log()
    if log is not None:
        log.write("".join(traceback.format_exception(error)))
    status = interruption_status(error)
    if status is not None:
        signal = "SIGTERM" if status == EXIT_SIGTERM else "Ctrl-C"
        print(f"interrupted ({signal}): {command} stopped", file=sys.stderr)
        return status
    if is_mistake(error):
        print(f"error: {mistake_line(error)}", file=sys.stderr)
        return EXIT_MISTAKE
    where = log.fallback() if log is not None else None
    if debugging() or where is None:
        traceback.print_exception(error, file=getattr(sys.stderr, "_console", sys.stderr))
    print(f"error: {command} failed unexpectedly ({type(error).__name__}: {first_line(error)}); "
          f"this is a bug: the full traceback is in {where or 'the output above'}", file=sys.stderr)
    return EXIT_BUG


def main(command: str, doc: str | None, body: Callable, argv=None,
         arguments: Callable[[list[str]], list[str]] = list) -> int:
    """A whole command: ``--help``/``--version`` answered, else ``body(cfg, argv)`` under the contract.

    ``cfg`` is ``conf/<command>.yaml`` composed with the command line (``arguments`` may first
    rewrite a shorthand users type); ``body`` gets it and the rewritten ``argv`` (for the
    ``data=...`` overrides) and returns the exit status. ``argv=None``: the process's own
    arguments, and the process is this command's (its console goes to the command's log).
    """
    from trainer.commands import command_config

    process = argv is None
    given = sys.argv[1:] if argv is None else list(argv)
    if command_config.answered(given, command, doc):
        return 0
    rewritten = arguments(given)
    return run(command, lambda: body(command_config.parse(command, rewritten), rewritten), process)


def run(command: str, body: Callable[[], int | None], process: bool) -> int:
    """Run a command's body under the contract.

    ``process``: this is the whole process (``python -m ...``), so its console goes through
    the command's log; a test calling ``main([...])`` in-process keeps its own streams.
    """
    import contextlib

    from trainer import signals

    if process:
        from trainer.console import start_command_log

        start_command_log(command)
        sys.unraisablehook = _unraisable_to_log
    try:
        # SIGTERM and Ctrl-C end every command alike (trainer/signals.py): 143 or 130, one line.
        with signals.handling() if process else contextlib.nullcontext():
            status = int(body() or 0)
        _settle_log()
    except SystemExit as exit:  # a status chosen on purpose (e.g. the runner's 2 or 143)
        if isinstance(exit.code, str):
            print(exit.code, file=sys.stderr)
        status = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
    except BaseException as error:  # noqa: BLE001 - this is the one place every exception ends
        status = finish(command, error)
    if process and status != 0:
        _end_now(status)
    return status


def _end_now(status: int) -> None:
    """End a failed command's process once its line and log are out, without interpreter teardown.

    A failure can leave a library's object half-done (h5py's file of a checkpoint save that hit a
    full disk); its finalizer at teardown then crashed the process (exit 139) after the status was
    reported. The exit functions (the console's, the log's) still run first.
    """
    import atexit
    import os

    try:
        sys.stdout.flush()
        sys.stderr.flush()
        atexit._run_exitfuncs()
    finally:
        os._exit(status)


def _unraisable_to_log(unraisable) -> None:
    """An exception in a finalizer (``Exception ignored in ...``) goes to the command's log only."""
    from trainer.console import command_log, debugging

    text = "".join(traceback.format_exception(unraisable.exc_type, unraisable.exc_value,
                                              unraisable.exc_traceback))
    log = command_log()
    if log is not None:
        log.write(f"Exception ignored in {unraisable.object!r}:\n{text}")
    if debugging() or log is None:
        sys.__unraisablehook__(unraisable)


def log_to(path: str) -> None:
    """The command's log belongs at ``path`` (written there once its folder exists)."""
    from trainer.console import command_log

    log = command_log()
    if log is not None:
        log.intend(path)


def _settle_log() -> None:
    from trainer.console import command_log

    log = command_log()
    if log is not None:
        log.settle()
