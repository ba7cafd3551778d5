"""What the server runs: the model, its tokenizer and head, and the dynamic batcher.

The batcher is one worker thread around a `zoo.generation.session.Session`: continuous batching.
When it is idle, a request waits for others to join it until `wait_ms` pass without a new arrival
(at most 4·`wait_ms`) or `max_batch_size` are waiting; while a batch runs, requests that arrive join
it between two decoding steps (decoder-only models with the KV cache; encoder-decoders wait for the
batch to end). Each token's text goes to its request's asyncio queue at once, and a finished or
cancelled request leaves the batch at once. Requests are admitted together and, if that fails
(which input validation should prevent), one at a time, so one bad request never fails the others.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from torch import nn

from zoo.generation import Completion, Request
from zoo.generation.session import Session


@dataclass
class Job:
    request: Request
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue  # (delta, Completion | None) tuples, or an Exception
    cancelled: threading.Event = field(default_factory=threading.Event)
    enqueued: float = field(default_factory=time.perf_counter)
    finished: bool = False
    generated: int = 0  # tokens decoded so far (also for a request cancelled mid-way)

    def push(self, event: Any) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)


class Batcher:
    """Decodes queued generation jobs in dynamic batches on a worker thread."""

    def __init__(self, model: nn.Module, tokenizer, max_batch_size: int = 16, wait_ms: float = 5.0,
                 observe_batch=None):
        self.model, self.tokenizer = model, tokenizer
        self.max_batch_size, self.wait = max(1, max_batch_size), wait_ms / 1000
        self.observe_batch = observe_batch  # called with each batch's size (metrics)
        self.jobs: queue.Queue[Optional[Job]] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="zoo-batcher", daemon=True)
        self.thread.start()

    def submit(self, request: Request) -> Job:
        job = Job(request, asyncio.get_running_loop(), asyncio.Queue())
        self.jobs.put(job)
        return job

    def queued(self) -> int:
        return self.jobs.qsize()

    def close(self) -> None:
        self.jobs.put(None)
        self.thread.join(timeout=10)

    def _collect(self, first: Job) -> list[Job]:
        """`first` and whoever joins it: the window closes `wait` after the latest arrival (so a burst of
        requests that takes longer than `wait` to parse still lands in one batch), at most 4·`wait`
        after the first."""
        start = time.perf_counter()
        batch, deadline = [first], start + self.wait
        while len(batch) < self.max_batch_size:
            left = deadline - time.perf_counter()
            try:
                job = self.jobs.get(timeout=left) if left > 0 else self.jobs.get_nowait()
            except queue.Empty:
                break
            if job is None:
                self.jobs.put(None)
                break
            batch.append(job)
            deadline = min(time.perf_counter() + self.wait, start + 4 * self.wait)
        return [j for j in batch if not j.cancelled.is_set()]

    def _run(self) -> None:
        session = Session(self.model, self.tokenizer)
        while True:
            if not len(session):
                job = self.jobs.get()
                if job is None:
                    return
                self._admit(session, self._collect(job))
            elif session.joinable:
                self._admit(session, self._waiting(session))
            if len(session):
                try:
                    session.step()
                except Exception as err:  # noqa: BLE001 — reported to the running requests; the worker lives on
                    for callback in session.callbacks:
                        callback.job.push(err)
                    session = Session(self.model, self.tokenizer)

    def _waiting(self, session: Session) -> list[Job]:
        """Jobs queued now, up to the batch size."""
        batch = []
        while len(session) + len(batch) < self.max_batch_size and not self.jobs.empty():
            job = self.jobs.get_nowait()
            if job is None:
                self.jobs.put(None)
                break
            batch.append(job)
        return [j for j in batch if not j.cancelled.is_set()]

    def _admit(self, session: Session, batch: list[Job]) -> None:
        if not batch:
            return
        if len(session) and not all(session.fits(j.request) for j in batch):
            fits = [j for j in batch if session.fits(j.request)]
            for job in batch:
                if job not in fits:
                    self.jobs.put(job)  # back in the queue: it joins when the batch has room in the context
            batch = fits
            if not batch:
                return
        try:
            session.add([j.request for j in batch], [_callback(j) for j in batch])
        except Exception as err:  # noqa: BLE001
            if len(batch) == 1:
                batch[0].push(err)
                return
            for job in batch:
                self._admit(session, [job])
            return
        if self.observe_batch is not None:
            self.observe_batch(len(session))


def _callback(job: Job):
    def on_text(delta: str, done: Optional[Completion]) -> bool:
        job.generated = len(done.token_ids) if done is not None else job.generated + 1
        if delta or done is not None:
            job.push((delta, done))
        job.finished = done is not None
        return job.cancelled.is_set()

    on_text.job = job
    return on_text
