"""The SSE decoder on the edge cases real vendors and proxies produce."""

from __future__ import annotations

import pytest

from llmdispatch_nb._sse import SSEDecoder, SSEEvent, iter_sse

STREAM = b'event: message_start\ndata: {"a":1}\n\n: keep-alive comment\n\ndata: line one\ndata: line two\n\ndata: [DONE]\n\n'
EXPECTED = [
    SSEEvent("message_start", '{"a":1}'),
    SSEEvent("", "line one\nline two"),
    SSEEvent("", "[DONE]"),
]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64, 10_000])
def test_any_split_of_the_bytes_gives_the_same_events(size: int) -> None:
    chunks = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    assert iter_sse(chunks) == EXPECTED


@pytest.mark.parametrize("eol", [b"\r\n", b"\r", b"\n"])
def test_every_line_ending(eol: bytes) -> None:
    data = STREAM.replace(b"\n", eol)
    assert iter_sse([data]) == EXPECTED
    # and split one byte at a time, so CR and LF of a CRLF land in different reads
    assert iter_sse([data[i : i + 1] for i in range(len(data))]) == EXPECTED


def test_crlf_split_across_reads_is_one_line_end() -> None:
    assert iter_sse([b"data: a\r", b"\ndata: b\r\n\r\n"]) == [SSEEvent("", "a\nb")]


def test_event_split_mid_line_and_mid_utf8_character() -> None:
    text = 'data: {"t":"héllo ✓"}\n\n'.encode()
    cut = text.index("✓".encode()) + 1  # inside the 3-byte character
    assert iter_sse([text[:cut], text[cut:]]) == [SSEEvent("", '{"t":"héllo ✓"}')]


def test_no_trailing_blank_line_is_flushed_at_close() -> None:
    assert iter_sse([b"data: last"]) == [SSEEvent("", "last")]


def test_stream_cut_short_mid_line_yields_what_was_whole() -> None:
    dec = SSEDecoder()
    events = list(dec.feed(b"data: one\n\ndata: tw"))
    assert events == [SSEEvent("", "one")]
    # the cut-off line is flushed as an event at close; adapters then judge completeness
    assert list(dec.close()) == [SSEEvent("", "tw")]


def test_space_after_colon_is_optional_and_only_one_is_stripped() -> None:
    assert iter_sse([b"data:x\n\ndata:  y\n\n"]) == [SSEEvent("", "x"), SSEEvent("", " y")]


def test_empty_data_field_and_id() -> None:
    assert iter_sse([b"id: 7\ndata\n\n"]) == [SSEEvent("", "", "7")]


def test_lines_that_are_not_sse_are_kept_as_stray_text() -> None:
    body = b'data: {"x":1}\n\n{"error": {"code": 503,\n "message": "overloaded"}}\n'
    events = iter_sse([body])
    assert events[0] == SSEEvent("", '{"x":1}')
    assert events[1].stray and '"code": 503' in events[1].data and "overloaded" in events[1].data


def test_comment_only_stream_yields_nothing() -> None:
    assert iter_sse([b": ping\n\n: ping\n\n"]) == []
