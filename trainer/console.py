"""What a person sees: no library banners, no escape codes in logs, numbers rounded for reading.

TensorFlow 2.21 logs its start-up banner (oneDNN, CUDA stubs, absl's "before
InitializeLog" notice) from C++ through absl, which ignores
``TF_CPP_MIN_LOG_LEVEL``; some lines come once per shared library, so twice.
``import_backend`` imports Keras (and TensorFlow) with the process's stderr
captured at the file-descriptor level and replays every line that is not one
of those known banners, so real errors still reach the user.

Every command calls ``quiet_startup()`` first, before anything imports
TensorFlow. Full-precision numbers stay in ``metrics.json``; the console gets
``EpochLine``'s one line per epoch when it is not a terminal (a progress bar
when it is).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import time

# Lines TensorFlow, XLA and CUDA print at start-up that tell a user nothing actionable.
BANNERS = re.compile("|".join((
    r"absl::InitializeLog\(\) is called",
    r"oneDNN custom operations are on",
    r"cudart_stub\.cc",
    r"Could not find cuda drivers",
    r"failed call to cuInit",
    r"Unable to register cu(DNN|FFT|BLAS) factory",
    r"computation placer already registered",
    r"TF-TRT Warning",
    r"This TensorFlow binary is optimized to use available CPU instructions",
    r"rebuild TensorFlow with the appropriate compiler flags",
    r"Unable to register .* plugin factory",
    r"cuda_(executor|platform|dnn|fft|blas)\.cc",
)))
# Lines in absl's format (``I1203 19:20:36.123456 8904 port.cc:153] ...``): TensorFlow, XLA and
# JAX logging from C++ or Python. Kept in the command's log, off the console.
FRAMEWORK_LINE = re.compile(r"^\s*[IWEF]\d{4} \d\d:\d\d:\d\d|^WARNING: All log messages before absl|"
                            r"^To enable the following instructions:|"
                            # TFDS preparing a local builder's data: nothing is downloaded
                            r"^Downloading and preparing dataset|^Dataset \S+ downloaded and prepared to|"
                            r"^Using custom data configuration: |"  # (TFDS prints these on stdout)
                            r"^INFO: .*TensorFlow Lite|"  # the TFLite interpreter's delegate notice
                            + BANNERS.pattern)
_STARTED = False


def quiet_startup() -> None:
    """Environment for quiet libraries, then Keras imported with its banners filtered."""
    global _STARTED
    if _STARTED:
        return
    _STARTED = True
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("WANDB_SILENT", "true")
    if not sys.stdout.isatty():
        # tqdm (TFDS) and termcolor write terminal escape codes otherwise
        os.environ.setdefault("TQDM_DISABLE", "1")
        os.environ.setdefault("NO_COLOR", "1")
    import_backend()


def import_backend() -> None:
    """Import Keras (and TensorFlow, when installed) with the start-up banners removed."""
    with filtered_stderr():
        import keras  # noqa: F401  (imports the backend)

        try:
            import tensorflow as tf
        except ImportError:  # a JAX-only host
            return
        tf.config.list_physical_devices()  # the CUDA probe logs here, not at import
        import absl.logging

        absl.logging.set_verbosity(absl.logging.WARNING)  # TFDS logs at INFO


@contextlib.contextmanager
def filtered_stderr(pattern: re.Pattern = BANNERS):
    """Capture file descriptor 2 in the block; afterwards write back the lines ``pattern`` misses."""
    try:
        stderr_fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (captured by a test runner)
        yield
        return
    sys.stderr.flush()
    saved = os.dup(stderr_fd)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), stderr_fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, stderr_fd)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode(errors="replace").splitlines()
                    if line.strip() and not pattern.search(line)]
            if kept:
                print("\n".join(kept), file=sys.stderr, flush=True)


def on_terminal() -> bool:
    return sys.stdout.isatty()


def readable(value) -> str:
    """A number as a person reads it: 4 significant digits, thousands separated."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.1f}"
    if magnitude == 0 or magnitude >= 0.001:
        return f"{value:.4g}"
    return f"{value:.2e}"


def make_epoch_line(epochs: int | None = None):
    """A Keras callback printing one rounded line per epoch (for logs that are not terminals).

    ``epochs`` is the run's total: a resumed run's ``fit`` calls cover only part of the run
    (Keras's own ``params["epochs"]`` is the segment's end), yet its lines count in the run's terms.
    """
    import keras

    class EpochLine(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self._started = None

        def on_epoch_begin(self, epoch, logs=None):
            self._started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            total = epochs or (self.params.get("epochs", "?") if self.params else "?")
            seconds = time.perf_counter() - (self._started or time.perf_counter())
            values = "  ".join(f"{name.replace('images_per_second', 'images/s')} {readable(float(v))}"
                               for name, v in (logs or {}).items())
            print(f"epoch {epoch + 1}/{total}  {values}  ({seconds:.0f} s)", flush=True)

    return EpochLine()


# -- the command's log: everything the console shows, plus what is kept off it ------------------

def debugging() -> bool:
    """``FACETRAIN_DEBUG=1``: framework lines, warnings and tracebacks on the console too."""
    return os.environ.get("FACETRAIN_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def framework_noise(line: str) -> bool:
    """A line the framework prints that a user need not see (it still goes to the log).

    A user who sets ``TF_CPP_MIN_LOG_LEVEL`` to 0 or 1 asked for TensorFlow's INFO or WARNING
    lines: they pass (2 and 3 ask for quiet, which absl's start-up lines ignore; kept off here).
    """
    if debugging() or os.environ.get("FACETRAIN_USER_TF_LOG_LEVEL", "").strip() in ("0", "1"):
        return False
    return bool(FRAMEWORK_LINE.search(line))


class CommandLog:
    """The command's log file: held in memory until the command knows its folder.

    ``attach(path)`` writes what was held and keeps the file open; a command that fails before
    it has a folder gets a log in the cache folder (``fallback()``), so a bug's traceback always
    has a file to be named by.
    """

    def __init__(self, command: str):
        import threading

        self.command = command
        self.path: str | None = None
        self._held: list[str] = []
        self._file = None
        self._intended: str | None = None
        self._lock = threading.RLock()

    def write(self, text: str) -> None:
        with self._lock:
            if self._file is None and self._intended and os.path.isdir(os.path.dirname(self._intended)):
                self.attach(self._intended)
            if self._file is None:
                self._held.append(text)
            else:
                self._file.write(text)
                self._file.flush()

    def intend(self, path: str) -> None:
        """The log belongs at ``path``: written there once its folder exists (the command made it).

        A command that fails before its work starts thus leaves no folder behind.
        """
        self._intended = os.path.abspath(path)

    def settle(self) -> None:
        """At a successful end: the log is written where it belongs, making its folder if need be."""
        if self._file is None and self._intended:
            self.attach(self._intended)

    def attach(self, path: str) -> str:
        """From now on the log is ``path`` (appended to: a resumed run keeps its history)."""
        with self._lock:
            if self._file is not None and self.path == os.path.abspath(path):
                return self.path
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            handle = open(path, "a", encoding="utf-8")
            handle.write("".join(self._held))
            handle.flush()
            if self._file is not None:
                self._file.close()
            self._held, self._file, self.path = [], handle, os.path.abspath(path)
            return self.path

    def detach(self) -> None:
        """Hold lines in memory again (the folder is about to go)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
            self._file, self.path = None, None

    def fallback(self) -> str:
        """The log's path, in the cache folder when the command never had one of its own."""
        if self.path is None and self._intended and os.path.isdir(os.path.dirname(self._intended)):
            self.attach(self._intended)
        if self.path is None:
            from trainer.component_index import cache_folder

            stamp = time.strftime("%Y%m%d-%H%M%S")
            folder = os.path.join(os.path.dirname(cache_folder()), "logs")
            self.attach(os.path.join(folder, f"{self.command}-{stamp}-{os.getpid()}.log"))
        return self.path

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class _Tee:
    """A text stream that writes to the console and to the log; framework lines only to the log
    (``filtered``: whole lines are judged, so a partial line waits for its end or a flush)."""

    def __init__(self, console, log: CommandLog, filtered: bool):
        self._console, self._log, self._filtered = console, log, filtered
        self._partial = ""

    def write(self, text: str) -> int:
        self._log.write(text)
        if not self._filtered:
            self._console.write(text)
            return len(text)
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        shown = [line for line in lines if not framework_noise(line)]
        if shown:
            self._console.write("\n".join(shown) + "\n")
        return len(text)

    def flush(self) -> None:
        if self._partial and not framework_noise(self._partial):
            self._console.write(self._partial)
            self._partial = ""
        self._console.flush()

    def __getattr__(self, name):  # fileno, isatty, encoding, ...: the console's
        return getattr(self._console, name)


def _pump(read_fd: int, console, log: CommandLog) -> None:
    """Lines written to file descriptor 2 (C++ logging, child processes) → log, console if not noise."""
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        pending = b""
        while True:
            chunk = pipe.read(65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace")
                log.write(line + "\n")
                if not framework_noise(line):
                    console.write(line + "\n")
                    console.flush()
        if pending:
            log.write(pending.decode(errors="replace") + "\n")


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings go to the log; only the project's own reach the console (a library's stay in the log)."""
    import warnings

    text = warnings.formatwarning(message, category, filename, lineno, line)
    log = _COMMAND_LOG
    if log is not None:
        log.write(text)
    project = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ours = os.path.abspath(filename).startswith(project + os.sep) and ".venv" not in filename \
        and "site-packages" not in filename
    if ours or debugging() or log is None:
        console = getattr(sys.stderr, "_console", sys.stderr)
        console.write(text)


_COMMAND_LOG: CommandLog | None = None


def start_command_log(command: str) -> CommandLog:
    """Route this process's console through the command's log (once per process).

    ``sys.stdout``/``sys.stderr`` are teed into the log; file descriptor 2 (where TensorFlow's
    C++ logging writes) is read by a thread that keeps framework lines off the console; Python
    warnings go to the log. Environment for quiet libraries is set, keeping the user's settings.
    """
    global _COMMAND_LOG
    if _COMMAND_LOG is not None:
        return _COMMAND_LOG
    import atexit
    import threading
    import warnings

    if "TF_CPP_MIN_LOG_LEVEL" in os.environ and "FACETRAIN_USER_TF_LOG_LEVEL" not in os.environ:
        os.environ["FACETRAIN_USER_TF_LOG_LEVEL"] = os.environ["TF_CPP_MIN_LOG_LEVEL"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("WANDB_SILENT", "true")
    if not sys.stdout.isatty():
        os.environ.setdefault("TQDM_DISABLE", "1")
        os.environ.setdefault("NO_COLOR", "1")
    log = _COMMAND_LOG = CommandLog(command)
    sys.stdout.flush()
    sys.stderr.flush()
    console_fd = os.dup(2)
    console = os.fdopen(console_fd, "w", buffering=1, encoding=getattr(sys.stderr, "encoding", None)
                        or "utf-8", errors="replace")
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    pump = threading.Thread(target=_pump, args=(read_fd, console, log), name="stderr-log", daemon=True)
    pump.start()
    sys.stdout = _Tee(sys.stdout, log, filtered=True)  # TFDS prints its notices on stdout
    sys.stderr = _Tee(console, log, filtered=True)
    warnings.showwarning = _show_warning

    def finish():
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os.dup2(console_fd, 2)  # closes the pipe's last writer in this process: the pump ends
        pump.join(timeout=2)
        log.close()

    atexit.register(finish)
    return log


def command_log() -> CommandLog | None:
    """The log of the running command (None inside a test that calls a command's ``main``)."""
    return _COMMAND_LOG
