"""The single thread that drives the model, fed by a bounded FIFO queue.

Two threads decoding on one llama context abort the process (GGML assertion), so every
model call goes through `ModelWorker`. A job cancelled while queued leaves the queue at
once; a running job sees `job.cancelled` between tokens and stops within one token step.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger("llm-service")


class QueueFullError(RuntimeError):
    pass


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
    def __init__(self, max_queue: int, name: str = "llm-worker") -> None:
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

    def submit(self, job: Job) -> None:
        """Queue a job; QueueFullError when `max_queue` jobs already wait (the running one not counted)."""
        with self._cond:
            if self._closed:
                raise QueueFullError("the model worker is shutting down")
            busy = self._active is not None or bool(self._queue)
            if busy and len(self._queue) >= self.max_queue:
                raise QueueFullError(
                    f"{len(self._queue)} requests already wait for the model (limit --max-queue {self.max_queue}); retry later"
                )
            self._queue.append(job)
            self._cond.notify_all()

    def wait_until(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Block until `predicate()` (checked whenever the queue or the active job changes) is true."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout_s)

    def cancel(self, job: Job) -> None:
        """Stop a job: removed from the queue if it has not started, else flagged (stops at the next token)."""
        job.cancelled.set()
        with self._cond:
            try:
                self._queue.remove(job)
            except ValueError:
                return  # running or finished
            self._cond.notify_all()
        job._finish()

    def run_sync(self, fn: Callable[[], object]) -> object:
        """Run `fn` on the worker thread (e.g. the warm-up) and wait for it."""
        box: list[object] = []
        errors: list[BaseException] = []

        def run(_job: Job) -> None:
            try:
                box.append(fn())
            except BaseException as error:
                errors.append(error)

        job = Job(run)
        with self._cond:
            self._queue.append(job)
            self._cond.notify_all()
        job.finished.wait()
        if errors:
            raise errors[0]
        return box[0] if box else None

    def close(self, timeout_s: float = 5.0) -> None:
        with self._cond:
            self._closed = True
            pending = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for job in pending:
            job.cancelled.set()
            job._finish()
        if self._active is not None:
            self._active.cancelled.set()
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
                log.exception("generation job failed")
            finally:
                with self._cond:
                    self._active = None
                    self._cond.notify_all()
                job._finish()
