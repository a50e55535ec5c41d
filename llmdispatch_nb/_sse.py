"""An incremental Server-Sent Events decoder, sans-IO.

Feed it bytes as they arrive, in pieces of any size; it yields whole events. Follows the
WHATWG rules that matter for LLM streams: LF, CRLF or CR line ends (a CRLF split across two
reads is one line end), `:` comment lines ignored, several `data:` lines joined with `\\n`,
one optional space after the colon stripped, an event dispatched on a blank line, and a
last event without its trailing blank line flushed by `close()`.

Lines that are not `field: value` (Gemini may send a bare JSON error object mid-stream)
are kept as `stray` text instead of being dropped, so an adapter can read them.

One line, and one event's lines together, are capped (`_transport.ResponseCaps.sse_event`,
16 MiB unless LLMDISPATCH_MAX_SSE_EVENT_MB says otherwise): a line that never ends would
otherwise be buffered until the deadline. A breach raises `_transport.CapExceeded`.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from dataclasses import dataclass

from ._transport import CapExceeded, ResponseCaps, response_caps

_FIELDS = frozenset({"event", "data", "id", "retry"})


@dataclass(frozen=True, slots=True)
class SSEEvent:
    event: str  # "" when the stream gave no `event:` line ("message" per spec)
    data: str
    id: str | None = None
    stray: bool = False  # text that was not SSE framing at all


class SSEDecoder:
    def __init__(self, caps: ResponseCaps | None = None) -> None:
        self._max = (caps or response_caps()).sse_event
        self._held = 0  # characters of the event being gathered (data and stray lines)
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buf = ""
        self._pending_cr = False
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._stray: list[str] = []
        self.events_seen = 0

    def feed(self, chunk: bytes) -> Iterator[SSEEvent]:
        text = self._utf8.decode(chunk)
        if self._pending_cr:
            # A CR ended the previous read; a LF starting this one belongs to it.
            if text.startswith("\n"):
                text = text[1:]
            self._pending_cr = False
        self._buf += text
        yield from self._lines(final=False)
        if len(self._buf) > self._max:
            raise CapExceeded("one line of the stream", self._max, "sse_event")

    def close(self) -> Iterator[SSEEvent]:
        """End of input: flush a last line and a last event that had no blank line."""
        self._buf += self._utf8.decode(b"", final=True)
        yield from self._lines(final=True)
        if self._buf:
            yield from self._line(self._buf)
            self._buf = ""
        yield from self._dispatch()

    def _lines(self, final: bool) -> Iterator[SSEEvent]:
        buf = self._buf
        start = 0
        n = len(buf)
        while start < n:
            cr = buf.find("\r", start)
            lf = buf.find("\n", start)
            if cr == -1 and lf == -1:
                break
            if cr != -1 and (lf == -1 or cr < lf):
                end = cr
                if cr + 1 < n:
                    nxt = cr + 2 if buf[cr + 1] == "\n" else cr + 1
                elif final:
                    nxt = cr + 1
                else:
                    # CR at the very end: the LF may come in the next read.
                    self._pending_cr = True
                    nxt = cr + 1
            else:
                end = lf
                nxt = lf + 1
            yield from self._line(buf[start:end])
            start = nxt
        self._buf = buf[start:]

    def _line(self, line: str) -> Iterator[SSEEvent]:
        if not line:
            yield from self._dispatch()
            return
        if line[0] == ":":
            return
        name, sep, value = line.partition(":")
        if name not in _FIELDS:
            self._hold(len(line))
            self._stray.append(line)
            return
        if not sep:
            value = ""
        elif value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._hold(len(value))
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value

    def _hold(self, n: int) -> None:
        self._held += n
        if self._held > self._max:
            raise CapExceeded("one event of the stream", self._max, "sse_event")

    def _dispatch(self) -> Iterator[SSEEvent]:
        self._held = 0
        if self._stray:
            stray = "\n".join(self._stray)
            self._stray = []
            yield SSEEvent("", stray, None, stray=True)
        if self._data:
            self.events_seen += 1
            yield SSEEvent(self._event, "\n".join(self._data), self._id)
        self._event = ""
        self._data = []


def iter_sse(chunks: list[bytes]) -> list[SSEEvent]:
    """Decode a whole byte sequence at once (tests, replay)."""
    dec = SSEDecoder()
    out: list[SSEEvent] = []
    for c in chunks:
        out.extend(dec.feed(c))
    out.extend(dec.close())
    return out
