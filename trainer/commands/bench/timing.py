"""Windows of timed steps and what they summarise to.

On a shared host single timings lie, so every measurement is a list of
windows taken in turns with the other measurements, reported as the median
with its spread; ratios are taken window by window (the two windows of a
pair ran seconds apart, under the same load) and then their median.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


@dataclass
class Windows:
    """Timed windows of one measurement: ``seconds[i]`` for window i of ``images_per_window``."""

    images_per_window: int
    steps_per_window: int = 0  # training steps per window (0: not a training measurement)
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)  # the process's CPU time (all threads)

    def add(self, seconds: float, cpu_seconds: float | None = None) -> None:
        self.seconds.append(float(seconds))
        if cpu_seconds is not None:
            self.cpu_seconds.append(float(cpu_seconds))

    def rates(self, cpu: bool = False) -> list[float]:
        """Images per second of each window (``cpu``: per CPU-second of this process)."""
        return [self.images_per_window / s for s in (self.cpu_seconds if cpu else self.seconds) if s > 0]

    def summary(self) -> dict:
        """Median images/s, the spread of the windows around it, and each window's rate."""
        rates = self.rates()
        if not rates:
            return {"images_per_second": None, "windows": 0}
        median = statistics.median(rates)
        return {"images_per_second": round(median, 2),
                "step_seconds": (round(self.images_per_window / median / self.steps_per_window, 6)
                                 if self.steps_per_window else None),
                "spread": round((max(rates) - min(rates)) / median, 4),  # (max-min)/median
                "windows": len(rates),
                "window_images_per_second": [round(r, 2) for r in rates],
                # CPU time is less disturbed by other processes than wall time on a shared host
                "images_per_cpu_second": (round(statistics.median(self.rates(cpu=True)), 2)
                                          if self.cpu_seconds else None)}


def steps_windows(batch_size: int, steps_per_window: int) -> Windows:
    return Windows(images_per_window=batch_size * steps_per_window, steps_per_window=steps_per_window)


def paired_ratio(numerator: Windows, denominator: Windows, cpu: bool = False) -> dict | None:
    """Median of the per-window rate ratios (window i against window i), and their range."""
    pairs = [a / b for a, b in zip(numerator.rates(cpu), denominator.rates(cpu)) if b > 0]
    if not pairs:
        return None
    return {"median": round(statistics.median(pairs), 4), "min": round(min(pairs), 4),
            "max": round(max(pairs), 4), "pairs": len(pairs)}
