"""The priority pool: urgent jobs jump the queue, results and errors reach the caller."""

from __future__ import annotations

import threading

import pytest

from swarmhub.workers import PriorityPool


def test_urgent_jobs_run_before_queued_normal_jobs() -> None:
    gate = threading.Event()
    order: list[str] = []
    with PriorityPool(1) as pool:
        blocker = pool.submit(gate.wait, 10)  # occupies the only thread while we queue the rest
        normal = [pool.submit(order.append, f"n{i}") for i in range(3)]
        urgent = pool.submit(order.append, "u", urgent=True)
        gate.set()
        for f in [blocker, *normal, urgent]:
            f.result(timeout=10)
    assert order == ["u", "n0", "n1", "n2"]


def test_results_and_exceptions_propagate() -> None:
    with PriorityPool(2) as pool:
        assert pool.submit(sum, [1, 2, 3]).result(timeout=10) == 6
        failing = pool.submit(int, "not a number")
        with pytest.raises(ValueError):
            failing.result(timeout=10)
    with pytest.raises(RuntimeError):
        pool.submit(sum, [1])
