"""Progress for the export passes: one line per step with its duration (rich), silent when ``quiet``."""

from __future__ import annotations

import contextlib
import time


class StepReporter:
    """``with steps.step("building base model"):`` prints ``[2/6] building base model ... done (3.1 s)``."""

    def __init__(self, total: int, quiet: bool = False):
        self.total = total
        self.index = 0
        self.quiet = quiet
        self._console = None
        if not quiet:
            from rich.console import Console

            self._console = Console(stderr=True, highlight=False)

    @contextlib.contextmanager
    def step(self, title: str):
        self.index += 1
        label = f"[{self.index}/{self.total}] {title}"
        start = time.perf_counter()
        if self._console is None:
            yield
            return
        with self._console.status(label + " ..."):
            try:
                yield
            except BaseException:
                self._console.print(f"{label} ... [red]failed[/red]")
                raise
        self._console.print(f"{label} ... done ({time.perf_counter() - start:.1f} s)")
