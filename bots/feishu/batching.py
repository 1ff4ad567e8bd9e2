"""Coalescing of concurrent webhook requests into shared Redis round trips.

Each request still waits until its own event is claimed and queued before it is answered; what is
shared is the trip: while one batch is in Redis, the requests that arrive meanwhile gather into the
next. Under load one transaction serves dozens of events; a lone event goes at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Batcher(Generic[Item, Result]):
    def __init__(self, run: Callable[[Sequence[Item]], Awaitable[list[Result]]], max_batch: int = 256) -> None:
        self.run = run
        self.max_batch = max_batch
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._draining = False

    async def submit(self, item: Item) -> Result:
        """The result for `item`; raises whatever `run` raised for its batch."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._pending.append((item, future))
        if not self._draining:
            self._draining = True
            loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while True:
                # Let requests already read off the sockets join this batch first.
                await asyncio.sleep(0)
                if not self._pending:
                    return
                batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
                try:
                    results = await self.run([item for item, _ in batch])
                except Exception as exc:  # noqa: BLE001 - handed to every waiting request, none is lost
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, results):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._draining = False
