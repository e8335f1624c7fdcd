"""Where a learner's time goes: exclusive phase seconds and the idle rest, on a clock the test moves."""

from __future__ import annotations

import pytest

from learner.timing import PhaseTimes


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_phases_count_exclusively_and_the_rest_of_the_wall_is_idle():
    clock = Clock()
    times = PhaseTimes(clock)
    assert times.summary() == {"ingest": 0.0, "train": 0.0, "broadcast": 0.0, "checkpoint": 0.0, "idle": 0.0,
                               "wall": 0.0}  # fmt: skip
    with times.phase("ingest"):
        clock.now += 0.25
    clock.now += 1.0  # waiting for the next fragment
    with times.phase("train"):
        clock.now += 3.0
        with times.phase("broadcast"):  # inside training: counted once, as broadcast
            clock.now += 0.5
        clock.now += 2.0
    times.add("train", 0.75)  # a share of a joint block
    with times.phase("checkpoint"):
        clock.now += 1.5
    summary = times.summary()
    assert summary["ingest"] == 0.25 and summary["broadcast"] == 0.5 and summary["checkpoint"] == 1.5
    assert summary["train"] == pytest.approx(5.75)
    assert summary["wall"] == pytest.approx(8.25)
    assert summary["idle"] == pytest.approx(8.25 - (0.25 + 5.75 + 0.5 + 1.5))  # the joint share was wall time outside its own phases
