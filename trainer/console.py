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


def make_epoch_line():
    """A Keras callback printing one rounded line per epoch (for logs that are not terminals)."""
    import keras

    class EpochLine(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self._started = None

        def on_epoch_begin(self, epoch, logs=None):
            self._started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epochs = self.params.get("epochs", "?") if self.params else "?"
            seconds = time.perf_counter() - (self._started or time.perf_counter())
            values = "  ".join(f"{name.replace('images_per_second', 'images/s')} {readable(float(v))}"
                               for name, v in (logs or {}).items())
            print(f"epoch {epoch + 1}/{epochs}  {values}  ({seconds:.0f} s)", flush=True)

    return EpochLine()
