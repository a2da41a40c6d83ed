"""Dynamic batching: requests that arrive together share one model call, run off the event loop.

Each request queues its examples and awaits a future. One gatherer task takes the first waiting
request, then every request already queued, and hands the batch to a single worker thread. While
the model runs, new requests queue up and form the next batch, so under load batches fill up
without waiting. When the queue runs dry first, the gatherer waits for others to join (at most
`max_wait_ms` since the first request) unless it has no reason to expect any: the previous batch
held a single request and no request is being read or validated right now (`arriving`). A lone
client therefore does not pay the wait; concurrent clients do, and their requests, answered
together, come back together (returning groups merge into one batch instead of alternating).
A request is never split: one larger than `max_batch_size` runs alone, so `max_batch_size=1` is
the one-request-at-a-time baseline. The event loop never runs the model, so /healthz answers
during a slow batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from rekit.data.schema import Record

PredictFn = Callable[[Sequence[Record]], np.ndarray]


@dataclass
class _Job:
    records: Sequence[Record]
    future: asyncio.Future


class Batcher:
    def __init__(self, predict: PredictFn, max_batch_size: int = 64, max_wait_ms: float = 5.0,
                 on_batch: Callable[[int, float], None] | None = None):
        self.predict, self.max_batch_size, self.max_wait = predict, max_batch_size, max_wait_ms / 1000
        self.on_batch = on_batch  # told (examples, seconds) after each model call, on the event loop
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rekit-model")
        self._task: asyncio.Task | None = None
        self._arriving = 0  # requests being read or validated: each will be submitted soon
        self._last_jobs = 0  # requests in the previous batch

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="rekit-batcher")

    async def run_in_worker(self, fn: Callable, *args):
        """`fn(*args)` on the model thread (loading the model: it then finishes before any batch)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Wrap the reading and validating of a request: a batch being gathered waits for it."""
        self._arriving += 1
        try:
            yield
        finally:
            self._arriving -= 1

    async def submit(self, records: Sequence[Record]) -> np.ndarray:
        """(len(records), C) probabilities, computed in some batch together with other requests."""
        if self._task is None or self._task.done():
            raise RuntimeError("the batcher is not running")
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Job(records, future))
        return await future

    async def close(self) -> None:
        """Finish every queued request, then stop the gatherer and the worker thread."""
        while not self._queue.empty() and self._task is not None and not self._task.done():
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)

    async def _run(self) -> None:
        carry: _Job | None = None
        while True:
            first = carry or await self._queue.get()
            batch, carry = await self._gather(first)
            self._last_jobs = len(batch)
            await self._predict(batch)

    async def _gather(self, first: _Job) -> tuple[list[_Job], _Job | None]:
        """`first` plus whatever joins it in time; the job that would overflow the batch is carried."""
        batch, n = [first], len(first.records)
        deadline = time.monotonic() + self.max_wait
        while n < self.max_batch_size:
            try:
                job = self._queue.get_nowait()  # already waiting: take it without a timer
            except asyncio.QueueEmpty:
                left = deadline - time.monotonic()
                if left <= 0 or not (self._arriving or self._last_jobs > 1):
                    break  # nobody is expected: waiting would only delay this batch
                try:
                    job = await asyncio.wait_for(self._queue.get(), left)
                except TimeoutError:
                    break
            if n + len(job.records) > self.max_batch_size:
                return batch, job
            batch.append(job)
            n += len(job.records)
        return batch, None

    async def _predict(self, batch: list[_Job]) -> None:
        live = [j for j in batch if not j.future.done()]  # a client that hung up cancelled its future
        if not live:
            return
        records = [r for j in live for r in j.records]
        t0 = time.perf_counter()
        try:
            probs = await asyncio.get_running_loop().run_in_executor(self._executor, self.predict, records)
        except Exception as e:  # noqa: BLE001 - every request of the batch gets the error; the server lives on
            for j in live:
                if not j.future.done():
                    j.future.set_exception(e)
            return
        if self.on_batch:
            self.on_batch(len(records), time.perf_counter() - t0)
        start = 0
        for j in live:
            end = start + len(j.records)
            if not j.future.done():
                j.future.set_result(probs[start:end])
            start = end
