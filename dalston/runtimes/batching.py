"""A micro-batcher: requests that arrive within a few milliseconds of each other share one model call.

WHY: a NeMo model transcribes a padded batch of N files in about the time of the longest one on a
GPU, so N concurrent requests served one by one waste most of the device. The server calls
`transcribe` from up to `max_concurrency` worker threads; each call here enqueues its item and
blocks, and one dispatcher thread takes whatever has arrived (waiting at most `window_s` after the
first item for company, never longer) up to `max_batch` items and runs `process(items)` once.

The dispatcher is also the ONLY thread that touches the model, so model-global switches (decoding
strategy, local attention for long audio) need no further locking.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger("dalston.batching")

In = TypeVar("In")
Out = TypeVar("Out")

#: Long enough for threads released by the same burst of requests to meet, short against any decode.
DEFAULT_WINDOW_S = 0.005


@dataclass
class BatchStats:
    """Counters for tests, logs and /metrics: how many calls and how they were grouped."""

    batches: int = 0
    items: int = 0
    largest: int = 0
    sizes: deque[int] = field(default_factory=lambda: deque(maxlen=1000))  # the most recent batch sizes


class MicroBatcher(Generic[In, Out]):
    """`submit(item) -> result`, with `process(list_of_items) -> list_of_results` called in batches."""

    def __init__(self, process: Callable[[Sequence[In]], Sequence[Out]], *, max_batch: int,
                 window_s: float = DEFAULT_WINDOW_S, name: str = "micro-batcher") -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.process = process
        self.max_batch = max_batch
        self.window_s = window_s
        self.stats = BatchStats()
        self._queue: queue.Queue[tuple[In, Future[Out]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._closed = False
        self._thread.start()

    def submit(self, item: In) -> Out:
        """Block until `item`'s result is ready; exceptions from `process` are re-raised here."""
        if self._closed:
            raise RuntimeError("the batcher is closed")
        future: Future[Out] = Future()
        self._queue.put((item, future))
        return future.result()

    def close(self) -> None:
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _collect(self, first: tuple[In, Future[Out]]) -> tuple[list[tuple[In, Future[Out]]], bool]:
        batch = [first]
        deadline = time.monotonic() + self.window_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                entry = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if entry is None:
                return batch, True
            batch.append(entry)
        return batch, False

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch, stop = self._collect(first)
            items = [item for item, _ in batch]
            try:
                results = list(self.process(items))
                if len(results) != len(items):
                    raise RuntimeError(f"process returned {len(results)} results for {len(items)} items")
            except BaseException as exc:  # every waiter gets the failure; the dispatcher lives on
                log.exception("batch_failed size=%d", len(items))
                for _, future in batch:
                    future.set_exception(exc)
                continue
            self.stats.batches += 1
            self.stats.items += len(items)
            self.stats.largest = max(self.stats.largest, len(items))
            self.stats.sizes.append(len(items))
            for (_, future), result in zip(batch, results):
                future.set_result(result)
