"""The single model thread shared by the three services (service_runtime.worker), without a model."""

from __future__ import annotations

import asyncio
import threading

import pytest

from service_runtime.worker import Cancelled, Job, ModelWorker, QueueFullError

WAIT_S = 10.0


def test_every_call_runs_on_the_one_worker_thread_in_order() -> None:
    worker = ModelWorker("test-worker")
    order: list[tuple[int, str]] = []

    async def main() -> None:
        calls = [worker.run(lambda i=i: order.append((i, threading.current_thread().name))) for i in range(5)]
        await asyncio.gather(*calls)

    asyncio.run(main())
    worker.close()
    assert order == [(i, "test-worker") for i in range(5)]


def test_a_cancelled_caller_drops_its_queued_job_and_errors_reach_the_caller() -> None:
    worker = ModelWorker("test-worker")
    release = threading.Event()
    ran: list[str] = []

    async def main() -> None:
        blocker = asyncio.ensure_future(worker.run(lambda: release.wait(WAIT_S)))
        queued = asyncio.ensure_future(worker.run(lambda: ran.append("queued")))
        await asyncio.to_thread(worker.wait_until, lambda: worker.active == 1 and worker.queued == 1, WAIT_S)
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        assert worker.queued == 0
        release.set()
        assert await blocker is True

        def fail() -> None:
            raise ValueError("model exploded")

        with pytest.raises(ValueError, match="model exploded"):
            await worker.run(fail)
        session_over = threading.Event()
        session_over.set()
        with pytest.raises(Cancelled):
            await worker.run(lambda: ran.append("late"), session_over)
        assert not worker.busy

    asyncio.run(main())
    worker.close()
    assert ran == []


def test_close_ends_waiting_callers() -> None:
    worker = ModelWorker("test-worker")
    release = threading.Event()

    async def main() -> None:
        running = asyncio.ensure_future(worker.run(lambda: release.wait(WAIT_S)))
        waiting = asyncio.ensure_future(worker.run(lambda: "never"))
        await asyncio.to_thread(worker.wait_until, lambda: worker.queued == 1, WAIT_S)
        closing = asyncio.ensure_future(asyncio.to_thread(worker.close))
        with pytest.raises(Cancelled):
            await waiting
        release.set()
        await closing
        assert await running is True

    asyncio.run(main())


def test_queue_limit_does_not_depend_on_when_the_thread_picks_up_a_job() -> None:
    """Submitted before the thread starts the first job: that job is not 'waiting'."""

    class StalledWorker(ModelWorker):  # its thread never picks up a job: the worst case of that race
        def _loop(self) -> None:
            return

    worker = StalledWorker("test-worker", max_queue=2)
    jobs = [Job(lambda j: None) for _ in range(4)]
    for job in jobs[:3]:
        worker.submit(job)  # one would run, two wait
    with pytest.raises(QueueFullError, match="2 requests already wait"):
        worker.submit(jobs[3])
