"""Streams handed to callers: events cross from the dispatcher's loop to the caller's
thread (a `queue.Queue`) or the caller's loop (`call_soon_threadsafe`), never blocking it;
an async call that runs on the caller's own loop queues its events directly.

Iterate for `TextDelta`, `UsageUpdate` and `Finish` events; afterwards `.response` is the
whole `Response` (or iteration raised the call's typed error). Breaking out of the loop,
or `close()`, cancels the call.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from ._types import Response, StreamEvent, TextDelta, ToolCallDelta
from .errors import LLMDispatchError

_END = object()


class StreamSink:
    """The producer side. `started` turns true once text (or a piece of a tool call) has
    reached the caller: a retry would then repeat it."""

    def __init__(self, put: Any) -> None:
        self._put = put
        self.started = False

    def send(self, event: StreamEvent) -> None:
        if isinstance(event, TextDelta | ToolCallDelta):
            self.started = True
        self._put(event)


# The running call: a concurrent future (on the dispatcher's loop) or a task (on the
# caller's loop); both have done / cancel / result / add_done_callback.
Running = concurrent.futures.Future[Response] | asyncio.Task[Response]


class _Base:
    def __init__(self) -> None:
        self._future: Running | None = None
        self.response: Response | None = None
        self._parts: list[str] = []
        self._closed_here = False  # close() cancelled the call, not someone else

    @property
    def text(self) -> str:
        """The text received so far."""
        return "".join(self._parts)

    def close(self) -> None:
        self._closed_here = True
        if self._future is not None and not self._future.done():
            self._future.cancel()

    def _finish(self) -> Response:
        assert self._future is not None
        if self._future.cancelled() and not self._closed_here:
            raise LLMDispatchError(
                "the call behind this stream was cancelled before it ended (its dispatcher "
                "was closed, or its loop stopped); the text so far is in .text") from None
        self.response = self._future.result()
        return self.response


class Stream(_Base):
    def __init__(self) -> None:
        super().__init__()
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.sink = StreamSink(self._q.put)

    def attach(self, future: concurrent.futures.Future[Response]) -> None:
        self._future = future
        future.add_done_callback(lambda _: self._q.put(_END))

    def __iter__(self) -> Iterator[StreamEvent]:
        try:
            while True:
                item = self._q.get()
                if item is _END:
                    break
                if isinstance(item, TextDelta):
                    self._parts.append(item.text)
                yield item
        except BaseException:
            self.close()
            raise
        finally:
            if self._future is not None and not self._future.done():
                self.close()
        self._finish()

    def text_deltas(self) -> Iterator[str]:
        for ev in self:
            if isinstance(ev, TextDelta):
                yield ev.text

    def result(self) -> Response:
        """Drain the stream and return the whole response."""
        for _ in self:
            pass
        assert self.response is not None
        return self.response


class AsyncStream(_Base):
    def __init__(self, loop: asyncio.AbstractEventLoop, *, same_loop: bool = False) -> None:
        super().__init__()
        self._loop = loop
        self._q: asyncio.Queue[Any] = asyncio.Queue()
        # Events wait here until the caller's loop drains them. One wake-up (a self-pipe
        # write and a thread switch) per batch, not per event: per event it was a fifth of
        # a streamed call's CPU (bench/RESULTS.md).
        self._pending: deque[Any] = deque()
        self._lock = threading.Lock()
        self._wake_scheduled = False
        # Produced on the caller's own loop: straight into the queue.
        self._deliver: Callable[[Any], None] = (
            self._q.put_nowait if same_loop else self._put_threadsafe)
        self.sink = StreamSink(self._deliver)

    def _put_threadsafe(self, item: Any) -> None:
        """On the dispatcher's thread: queue `item`; wake the caller's loop if it sleeps."""
        with self._lock:
            self._pending.append(item)
            if self._wake_scheduled:
                return
            self._wake_scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the caller's loop is gone
            pass

    def _drain(self) -> None:
        with self._lock:
            items = list(self._pending)
            self._pending.clear()
            self._wake_scheduled = False
        for item in items:
            self._q.put_nowait(item)

    def attach(self, future: Running) -> None:
        self._future = future
        future.add_done_callback(lambda _: self._deliver(_END))

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        try:
            while True:
                item = await self._q.get()
                if item is _END:
                    break
                if isinstance(item, TextDelta):
                    self._parts.append(item.text)
                yield item
        except BaseException:
            self.close()
            raise
        self._finish()

    async def text_deltas(self) -> AsyncIterator[str]:
        async for ev in self:
            if isinstance(ev, TextDelta):
                yield ev.text

    async def result(self) -> Response:
        async for _ in self:
            pass
        assert self.response is not None
        return self.response
