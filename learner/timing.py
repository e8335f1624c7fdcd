"""Where a learner's wall time goes: the seconds in each phase of its loop and the rest, idle.

An in-job update rate below the bench's is either time outside training (ingesting fragments, broadcasting,
checkpointing, waiting for data) or slower training; these figures tell which (``bench/in_job_rate.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

PHASES = ("ingest", "train", "broadcast", "checkpoint")


class PhaseTimes:
    """Exclusive seconds per phase (a phase inside another counts only in the inner one) and, since the first
    phase began, the wall time spent in none of them (``idle``: waiting for fragments, serving progress calls)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.started: float | None = None
        self._open: list[list] = []  # [phase, start, seconds of the phases nested inside it]

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = self.clock()
        if self.started is None:
            self.started = start
        frame = [name, start, 0.0]
        self._open.append(frame)
        try:
            yield
        finally:
            self._open.pop()
            elapsed = self.clock() - start
            self.seconds[name] += elapsed - frame[2]
            if self._open:
                self._open[-1][2] += elapsed

    def add(self, name: str, seconds: float) -> None:
        """Seconds measured elsewhere (a run's share of a block trained jointly with other runs)."""
        self.seconds[name] += seconds

    def busy(self) -> float:
        """Seconds in all phases so far."""
        return sum(self.seconds.values())

    def summary(self) -> dict[str, float]:
        """Seconds per phase, ``idle`` and ``wall`` (since the first phase began; 0 before), rounded to ms."""
        wall = self.clock() - self.started if self.started is not None else 0.0
        idle = max(0.0, wall - self.busy())
        return {**{name: round(s, 3) for name, s in self.seconds.items()}, "idle": round(idle, 3), "wall": round(wall, 3)}
