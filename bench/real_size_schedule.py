"""Runs bench/real_size.py's operations side by side within the machine's memory.

As many operations at once as ``jobs`` (the CPU cores by default; each is one process on one thread), the
longest expected first, and never more at once than the memory free at the start holds by their estimated
peaks (an operation that fits nowhere runs alone). While they run, the resident memory of the whole
process tree is sampled: its peak is the memory the machine needed at once.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import psutil


class TreeMemory(threading.Thread):
    """Samples the resident memory of this process and all its descendants: ``peak_gb`` is the largest sum
    (an upper bound: pages the processes share count once per process); ``machine_peak_gb`` is the most
    memory the machine had in use (total − available), whatever used it."""

    def __init__(self, every_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.every_s, self.peak_gb, self.machine_peak_gb = every_s, 0.0, 0.0
        self._finished = threading.Event()

    @staticmethod
    def machine_gb() -> float:
        vm = psutil.virtual_memory()
        return (vm.total - vm.available) / 2**30

    def tree_gb(self) -> float:
        me = psutil.Process()
        total = me.memory_info().rss
        for child in me.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:  # ended between the listing and the reading
                pass
        return total / 2**30

    def run(self) -> None:
        while not self._finished.wait(self.every_s):
            self.peak_gb = max(self.peak_gb, self.tree_gb())
            self.machine_peak_gb = max(self.machine_peak_gb, self.machine_gb())

    def __enter__(self) -> TreeMemory:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self._finished.set()
        self.join()


def next_fitting(pending: Sequence[Any], running: Sequence[Any], budget_gb: float) -> Any | None:
    """The first pending operation whose estimated peak fits beside the running ones (any, if none runs)."""
    in_use = sum(op.needs_gb for op in running)
    for op in pending:
        if not running or in_use + op.needs_gb <= budget_gb:
            return op
    return None


def run_side_by_side(ops: Sequence[Any], run_one: Callable[[Any], dict], jobs: int, budget_gb: float,
                     on_done: Callable[[Any, dict], None] = lambda op, result: None) -> dict[str, dict]:
    """``run_one(op)`` for every op, up to ``jobs`` at once within ``budget_gb``; {op.name: result}."""
    pending = sorted(ops, key=lambda op: -op.minutes)
    running: dict[Future, Any] = {}
    results = {}
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        while pending or running:
            while len(running) < jobs and (op := next_fitting(pending, list(running.values()), budget_gb)):
                pending.remove(op)
                running[pool.submit(run_one, op)] = op
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                op = running.pop(future)
                results[op.name] = future.result()
                on_done(op, results[op.name])
    return results
