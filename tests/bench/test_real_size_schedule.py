"""bench/real_size_schedule.py: operations side by side, never more at once than the memory budget holds."""
from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from real_size_schedule import TreeMemory, next_fitting, run_side_by_side  # noqa: E402


@dataclass(frozen=True)
class FakeOp:
    """An operation as the scheduler sees it: its name, estimated peak and minutes."""

    name: str
    needs_gb: float
    minutes: float


def test_next_fitting_takes_the_first_that_fits_beside_the_running_ones():
    big, mid, small = FakeOp("big", 15, 5), FakeOp("mid", 8, 2), FakeOp("small", 3, 1)
    assert next_fitting([mid, small], [big], budget_gb=20) is small
    assert next_fitting([mid], [big], budget_gb=20) is None
    assert next_fitting([FakeOp("huge", 40, 1)], [], budget_gb=20).name == "huge"  # alone, whatever it needs


def test_run_side_by_side_keeps_within_jobs_and_memory():
    ops = [FakeOp("a", 12, 3), FakeOp("b", 10, 2), FakeOp("c", 5, 1), FakeOp("d", 4, 1), FakeOp("e", 30, 4)]
    lock, running, seen, started = threading.Lock(), {}, [], []

    def run_one(op):
        with lock:
            running[op.name] = op
            seen.append((len(running), sum(o.needs_gb for o in running.values()), set(running)))
            started.append(op.name)
        time.sleep(0.05)
        with lock:
            del running[op.name]
        return {"name": op.name, "ok": True}

    done = []
    results = run_side_by_side(ops, run_one, jobs=2, budget_gb=20, on_done=lambda op, r: done.append(op.name))
    assert set(results) == {op.name for op in ops} and sorted(done) == sorted(results)
    assert started[0] == "e"  # the longest first
    assert max(n for n, _, _ in seen) == 2
    assert all(gb <= 20 or names == {"e"} for _, gb, names in seen)  # only the one too big for any pair


def test_tree_memory_sees_this_process():
    with TreeMemory(every_s=0.01) as memory:
        time.sleep(0.1)
    assert 0.01 < memory.peak_gb < 1000
    assert 0 < memory.machine_peak_gb <= psutil.virtual_memory().total / 2**30
