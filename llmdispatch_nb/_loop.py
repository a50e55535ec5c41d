"""The dispatcher's own event loop, in a daemon thread.

Sync calls (magics, widget callbacks, scripts, other threads) hand their coroutine to this
loop and wait; async callers on another loop await a wrapped future. Jupyter's running
loop is never blocked on itself and never patched (no nest-asyncio): the kernel thread
only waits on a concurrent future that another thread completes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from .errors import LLMDispatchError

T = TypeVar("T")


class LoopThread:
    def __init__(self, name: str = "llmdispatch-loop") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.closed_under_calls = False  # cancel_all ran: a cancelled call was closed under

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            with self._lock:
                if self._loop is None:
                    ready = threading.Event()
                    loop = asyncio.new_event_loop()

                    def run() -> None:
                        asyncio.set_event_loop(loop)
                        loop.call_soon(ready.set)
                        loop.run_forever()

                    self._thread = threading.Thread(target=run, name=self._name, daemon=True)
                    self._thread.start()
                    ready.wait()
                    self._loop = loop
        return self._loop

    @property
    def running_loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop if its thread has started (unlike `loop`, never starts it)."""
        return self._loop

    def in_loop_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the loop and wait for it; Ctrl-C cancels it cleanly."""
        if self.in_loop_thread():
            coro.close()
            raise RuntimeError(
                "a sync Dispatcher call was made from the dispatcher's own loop; "
                "use `await dispatcher.asend(...)` there instead"
            )
        fut = self.submit(coro)
        try:
            return fut.result()
        except KeyboardInterrupt:
            fut.cancel()
            raise
        except concurrent.futures.CancelledError:
            if self.closed_under_calls:
                raise self._closed_error() from None
            raise

    @staticmethod
    def _closed_error() -> LLMDispatchError:
        return LLMDispatchError("the dispatcher was closed while this call was running (the "
                                "attempt is in the ledger as cancelled); make a new Dispatcher "
                                "to go on")

    def cancel_all(self, timeout: float = 5.0) -> None:
        """Cancel every call still running on the loop and wait (up to `timeout`) for them
        to end, as the dispatcher closes: each records its cancellation and its caller gets
        an error. Stopping the loop under them left their callers waiting forever."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive() or self.in_loop_thread():
            return
        self.closed_under_calls = True

        async def cancel_the_others() -> None:
            me = asyncio.current_task()
            running = [t for t in asyncio.all_tasks() if t is not me]
            for task in running:
                task.cancel()
            if running:
                await asyncio.wait(running, timeout=timeout)

        _run_briefly(cancel_the_others(), loop, timeout + 1)

    async def arun(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await `coro` from any loop: directly on ours, through a future from others."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            return await coro
        fut = self.submit(coro)
        try:
            return await asyncio.wrap_future(fut)
        except asyncio.CancelledError:
            fut.cancel()
            me = asyncio.current_task()
            if self.closed_under_calls and (me is None or not me.cancelling()):
                raise self._closed_error() from None  # ours, not the caller's own cancel
            raise

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if not loop.is_closed() and thread.is_alive() and thread is not threading.current_thread():
            # Async generators left unfinished (a stream broken off) are closed on this loop
            # now; closing the loop under them leaves their aclose() never awaited.
            _run_briefly(loop.shutdown_asyncgens(), loop, 5.0)
        if not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        if thread is not threading.current_thread():
            thread.join(5)
            # A stopped loop still holds its self-pipe sockets until closed.
            if not thread.is_alive() and not loop.is_closed():
                loop.close()
        self._loop = None
        self._thread = None


def _run_briefly(coro: Coroutine[Any, Any, Any], loop: asyncio.AbstractEventLoop,
                 timeout: float) -> None:
    """Run `coro` on `loop` (another thread's) and wait at most `timeout`: a loop wedged
    by some call, or a generator that will not close, must not hold up a close."""
    done = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        done.result(timeout)
    except Exception:
        done.cancel()
