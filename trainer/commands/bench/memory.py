"""Peak memory: the host process (resident set) and the accelerator, where the backend tells."""

from __future__ import annotations

import resource
import sys

import keras


def peak_host_bytes(children: bool = False) -> int:
    """Peak resident set size of this process (or of its finished children), in bytes."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    # Linux reports KiB, macOS bytes.
    return int(usage.ru_maxrss) * (1 if sys.platform == "darwin" else 1024)


def peak_device_bytes() -> int | None:
    """Peak bytes allocated on the first accelerator since start, or None (CPU, unknown)."""
    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            device = jax.local_devices()[0]
            if device.platform == "cpu":
                return None
            stats = device.memory_stats() or {}
            return int(stats["peak_bytes_in_use"]) if "peak_bytes_in_use" in stats else None
        if backend == "tensorflow":
            import tensorflow as tf

            if not tf.config.list_logical_devices("GPU"):
                return None
            return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])
    except Exception:  # memory statistics are best effort
        return None
    return None


def gib(value: int | None) -> float | None:
    return round(value / 2**30, 3) if value is not None else None
