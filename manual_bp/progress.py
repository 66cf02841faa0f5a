"""A dependency-free progress bar for long loops (training epochs, verification)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["ProgressBar"]


class ProgressBar:
    """``with ProgressBar(total, "epoch 1/30") as bar: ... bar.update(k)``.

    Redraws at most ``max_rate`` times a second on ``stream`` (stderr by
    default); on a non-terminal stream only the final line is written, so logs
    and CI output stay readable. ``enabled=False`` makes every call a no-op.
    """

    def __init__(
        self,
        total: int,
        description: str = "",
        *,
        stream: TextIO | None = None,
        enabled: bool = True,
        width: int = 30,
        max_rate: float = 10.0,
    ) -> None:
        self.total = max(int(total), 1)
        self.description = description
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.width = width
        self.count = 0
        self.postfix = ""
        self._interactive = enabled and getattr(self.stream, "isatty", lambda: False)()
        self._min_interval = 1.0 / max_rate
        self._start = time.perf_counter()
        self._last_draw = 0.0

    def update(self, n: int = 1) -> None:
        self.count = min(self.count + n, self.total)
        if self._interactive:
            now = time.perf_counter()
            if now - self._last_draw >= self._min_interval or self.count == self.total:
                self._last_draw = now
                self._draw(end="")

    def close(self) -> None:
        if self.enabled:
            self._draw(end="\n")

    def _draw(self, end: str) -> None:
        elapsed = time.perf_counter() - self._start
        filled = int(self.width * self.count / self.total)
        bar = "#" * filled + "-" * (self.width - filled)
        rate = self.count / elapsed if elapsed > 0 else 0.0
        line = f"{self.description} [{bar}] {self.count}/{self.total} {elapsed:6.1f}s {rate:,.0f}/s"
        if self.postfix:
            line += f" {self.postfix}"
        prefix = "\r" if self._interactive else ""
        self.stream.write(prefix + line + end)
        self.stream.flush()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
