"""A progress bar: tqdm when installed, else a line every tenth of the way."""

from __future__ import annotations

import sys
import time


class _Lines:
    def __init__(self, total: int, desc: str):
        self.total, self.desc, self.done, self.start, self.shown = total, desc, 0, time.monotonic(), -1

    def update(self, count: int = 1) -> None:
        self.done += count
        tenth = self.done * 10 // max(self.total, 1)
        if tenth != self.shown:
            self.shown = tenth
            print(f"{self.desc}: {self.done}/{self.total} ({time.monotonic() - self.start:.0f} s)",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


def progress_bar(total: int, desc: str):
    """An object with ``update(n)`` and ``close()``."""
    try:
        from tqdm import tqdm
    except ImportError:
        return _Lines(total, desc)
    return tqdm(total=total, desc=desc, unit="photo", file=sys.stderr, mininterval=1.0)
