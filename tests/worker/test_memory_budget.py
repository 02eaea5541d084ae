"""The pipelined worker's memory budget: images admitted while their peaks fit together, one alone always."""

from __future__ import annotations

import threading

from gpu_batch.worker.memory_budget import HostMemoryBudget

DEADLINE = 30.0


def test_images_are_admitted_while_their_peaks_fit_together() -> None:
    budget, never = HostMemoryBudget(100), threading.Event()
    assert budget.acquire(60, unless=never) and budget.fits(40) and not budget.fits(41)
    assert budget.acquire(40, unless=never) and budget.held == 100
    budget.release(60)
    budget.release(40)
    assert budget.held == 0


def test_an_image_larger_than_the_whole_budget_runs_alone() -> None:
    budget, never = HostMemoryBudget(100), threading.Event()
    assert budget.fits(500) and budget.acquire(500, unless=never)
    assert not budget.fits(1)
    budget.release(500)
    assert budget.fits(1)


def test_a_waiting_image_is_admitted_when_another_is_released() -> None:
    budget, never = HostMemoryBudget(100), threading.Event()
    budget.acquire(80, unless=never)
    admitted = threading.Event()

    def wait_for_room() -> None:
        if budget.acquire(50, unless=never, poll_seconds=0.05):
            admitted.set()

    waiter = threading.Thread(target=wait_for_room)
    waiter.start()
    assert not admitted.wait(0.2)  # no room yet (a short look, not a timing assumption: it cannot be admitted)
    budget.release(80)
    assert admitted.wait(DEADLINE)
    waiter.join(DEADLINE)
    assert budget.held == 50


def test_a_stop_ends_the_wait_without_admitting() -> None:
    budget, stop = HostMemoryBudget(100), threading.Event()
    budget.acquire(80, unless=stop)
    results: list[bool] = []
    waiter = threading.Thread(target=lambda: results.append(budget.acquire(50, unless=stop, poll_seconds=0.05)))
    waiter.start()
    stop.set()
    waiter.join(DEADLINE)
    assert results == [False] and budget.held == 80
