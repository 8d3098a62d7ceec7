"""The single thread that drives a model, fed by a FIFO queue (optionally bounded).

A model instance is never driven by two threads at once (two threads decoding on one llama
context abort the process; Whisper and ONNX sessions are not thread-safe either), so every
model call of a service goes through its `ModelWorker`:

* `await worker.run(fn)` from the event loop: `fn()` runs on the worker thread. Cancelling
  the awaiting task removes a job that has not started; one already running finishes and its
  result is dropped.
* `worker.submit(Job(...))` for a long job that watches `job.cancelled` itself (LLM generation
  checks it between tokens); `worker.cancel(job)` removes it from the queue or flags it.
* `worker.run_sync(fn)` for the load-time warm-up.

With `max_queue`, `submit` refuses a job (QueueFullError) when that many already wait.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class QueueFullError(RuntimeError):
    pass


class Cancelled(Exception):
    """The job was cancelled (or the worker closed) before it started."""


class Job:
    def __init__(self, run: Callable[[Job], None], on_done: Callable[[], None] = lambda: None) -> None:
        self._run = run
        self._on_done = on_done
        self.cancelled = threading.Event()
        self.finished = threading.Event()
        self.submitted_at = time.perf_counter()
        self.started_at: float | None = None

    @property
    def queue_wait_s(self) -> float:
        return (self.started_at or time.perf_counter()) - self.submitted_at

    def _finish(self) -> None:
        self.finished.set()
        try:
            self._on_done()
        except Exception:  # a failing callback must not kill the worker
            log.exception("job completion callback failed")


class ModelWorker:
    def __init__(self, name: str = "model-worker", max_queue: int | None = None) -> None:
        self.max_queue = max_queue
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._active: Job | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @property
    def active(self) -> int:
        return 1 if self._active is not None else 0

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    @property
    def busy(self) -> bool:
        """A job is running or waiting."""
        return self._active is not None or bool(self._queue)

    def submit(self, job: Job) -> None:
        """Queue a job; QueueFullError when `max_queue` jobs already wait (the running one not counted)."""
        with self._cond:
            if self._closed:
                raise QueueFullError("the model worker is shutting down")
            # Jobs ahead of this one; all but one of them (running, or about to be picked up) wait.
            # Counted this way, the limit does not depend on how soon the thread picks up a job.
            ahead = len(self._queue) + (self._active is not None)
            if self.max_queue is not None and ahead > self.max_queue:
                raise QueueFullError(
                    f"{ahead - 1} requests already wait for the model (limit --max-queue {self.max_queue}); retry later"
                )
            self._queue.append(job)
            self._cond.notify_all()

    def cancel(self, job: Job) -> None:
        """Stop a job: removed from the queue if it has not started, else flagged (the job checks the flag)."""
        job.cancelled.set()
        with self._cond:
            try:
                self._queue.remove(job)
            except ValueError:
                return  # running or finished
            self._cond.notify_all()
        job._finish()

    async def run(self, fn: Callable[[], T], cancelled: threading.Event | None = None) -> T:
        """`fn()` on the worker thread. Raises Cancelled when `cancelled` is set before it starts."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(outcome: Callable[[], None]) -> None:
            if not future.done():
                outcome()

        def post(outcome: Callable[[], None]) -> None:
            try:
                loop.call_soon_threadsafe(settle, outcome)
            except RuntimeError:  # the loop is closed (shutdown): nobody waits any more
                pass

        def work(job: Job) -> None:
            if job.cancelled.is_set() or (cancelled is not None and cancelled.is_set()):
                post(lambda: future.set_exception(Cancelled()))
                return
            try:
                value = fn()
            except Exception as error:
                failure = error  # `error` is unbound after the except block; the callback runs later
                post(lambda: future.set_exception(failure))
            else:
                post(lambda: future.set_result(value))

        job = Job(work, on_done=lambda: post(lambda: future.set_exception(Cancelled())))
        self.submit(job)
        try:
            return await future
        finally:
            if not job.finished.is_set():
                self.cancel(job)

    def run_sync(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the worker thread (e.g. the warm-up) and wait for it; ignores `max_queue`."""
        box: list[Any] = []
        errors: list[BaseException] = []

        def run(_job: Job) -> None:
            try:
                box.append(fn())
            except BaseException as error:
                errors.append(error)

        job = Job(run)
        with self._cond:
            if self._closed:
                raise Cancelled("the model worker is closed")
            self._queue.append(job)
            self._cond.notify_all()
        job.finished.wait()
        if errors:
            raise errors[0]
        if not box:
            raise Cancelled("the model worker closed before the job ran")
        result: T = box[0]
        return result

    def wait_until(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Block until `predicate()` (checked whenever the queue or the active job changes) is true."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        """Drop waiting jobs, flag the running one, and wait up to `timeout_s` for the thread to end."""
        with self._cond:
            self._closed = True
            pending = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for job in pending:
            job.cancelled.set()
            job._finish()
        active = self._active
        if active is not None:
            active.cancelled.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed and not self._queue:
                    return
                job = self._queue.popleft()
                self._active = job
                self._cond.notify_all()
            job.started_at = time.perf_counter()
            try:
                job._run(job)
            except Exception:
                log.exception("model job failed")
            finally:
                with self._cond:
                    self._active = None
                    self._cond.notify_all()
                job._finish()
