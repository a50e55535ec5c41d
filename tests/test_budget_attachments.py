"""A budget cannot be overspent by images and PDFs (issue 14 items 2/3): the reservation
bounds each attachment by its vendor's billing rules for pixels and pages
(`llmdispatch_nb/_attachment_tokens.py`), and the emulators bill by the same rules.

Checked: the bound is never under what the emulators bill, for hundreds of generated
images (random sizes, PNG/JPEG/GIF/WebP, OpenAI detail levels) and PDFs (pages plain or in
compressed object streams) per vendor, directly and over loopback; concurrent calls with
images on a small budget never spend past it, counted against the usage the emulators
reported; an image by URL reserves the vendor's per-image maximum."""

from __future__ import annotations

import asyncio
import random
import struct
import zlib
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

import llmdispatch_nb as ld
from llmdispatch_nb import Dispatcher, Response
from llmdispatch_nb._attachment_tokens import (
    PAGE_LIMITS,
    attachment_bound,
    billed_tokens,
    image_size,
    pdf_pages,
)
from llmdispatch_nb.errors import BudgetExceededError, LLMDispatchError
from llmdispatch_nb.pricing import PriceBook
from llmdispatch_nb.resilience import Budget, RetryPolicy
from llmdispatch_nb.routing import prompt_token_bound
from llmdispatch_nb.sim import SimServer
from tests._resilience_support import dispatcher, fresh, start

from ._images import png

MODELS = {"openai": ["gpt-4o", "gpt-4o-mini", "gpt-4.1-mini", "gpt-4.1-nano", "o4-mini", "o3",
                     "gpt-5", "gpt-5-mini", "gpt-5.4", "gpt-5.4-mini", "model-from-the-future"],
          "anthropic": ["claude-haiku-4-5", "claude-sonnet-4-5", "claude-opus-4-7",
                        "claude-3-5-sonnet-latest", "claude-from-the-future"],
          "gemini": ["gemini-2.0-flash", "gemini-2.5-flash", "gemini-3-flash-preview",
                     "model-from-the-future"]}


# -- images and PDFs of any size, header-true (the vendors' rules read only the size) ------


def _png(w: int, h: int) -> bytes:
    if w * h <= 4096:
        return png(w, h)  # a whole, valid image
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr
            + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + b"\x00" * 16)


def _jpeg(w: int, h: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, h, w, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8" + app0 + b"\xff\xff" + sof + b"\x00" * 16 + b"\xff\xd9"


def _gif(w: int, h: int) -> bytes:
    return b"GIF89a" + struct.pack("<HHBBB", w, h, 0, 0, 0) + b";"


def _webp(w: int, h: int, flavour: int) -> bytes:
    if flavour == 0 and w <= 16383 and h <= 16383:  # lossy VP8
        body = b"VP8 " + struct.pack("<I", 10) + b"\x00\x00\x00\x9d\x01\x2a" + struct.pack("<HH", w, h)
    elif flavour == 1 and w <= 16384 and h <= 16384:  # lossless VP8L
        bits = (w - 1) | ((h - 1) << 14)
        body = b"VP8L" + struct.pack("<I", 5) + b"\x2f" + struct.pack("<I", bits)
    else:  # extended VP8X
        body = (b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00"
                + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little"))
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


def random_image(rng: random.Random, *, gif: bool = True) -> tuple[bytes, tuple[int, int]]:
    shape = rng.choice(["small", "photo", "long", "huge"])
    if shape == "small":
        w, h = rng.randint(1, 400), rng.randint(1, 400)
    elif shape == "photo":
        w, h = rng.randint(400, 4500), rng.randint(400, 4500)
    elif shape == "long":
        w, h = rng.randint(1, 120), rng.randint(1000, 8000)
        w, h = (w, h) if rng.random() < 0.5 else (h, w)
    else:
        w, h = rng.randint(4000, 8000), rng.randint(4000, 8000)
    kinds = ["png", "jpeg", "webp"] + (["gif"] if gif else [])
    kind = rng.choice(kinds)
    if kind == "gif":
        w, h = min(w, 65535), min(h, 65535)
        return _gif(w, h), (w, h)
    if kind == "png":
        return _png(w, h), (w, h)
    if kind == "jpeg":
        return _jpeg(w, h), (w, h)
    return _webp(w, h, rng.randint(0, 2)), (w, h)


def make_pdf(pages: int, *, packed: bool) -> bytes:
    """A PDF of `pages` pages; `packed`: the page objects inside a compressed object stream
    (PDF 1.5+), where a plain byte search does not see them, and no /Count in the clear."""
    kids = " ".join(f"{3 + i} 0 R" for i in range(pages))
    page_objs = [b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>" for _ in range(pages)]
    pages_obj = f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode()
    out = b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
    if not packed:
        out += b"2 0 obj\n" + pages_obj + b"\nendobj\n"
        for i, o in enumerate(page_objs):
            out += b"%d 0 obj\n" % (3 + i) + o + b"\nendobj\n"
        return out + b"trailer\n<< /Root 1 0 R >>\n%%EOF\n"
    inner = b" ".join([pages_obj, *page_objs])
    packed_bytes = zlib.compress(inner)
    out += (b"%d 0 obj\n<< /Type /ObjStm /N %d /Filter /FlateDecode /Length %d >>\nstream\n"
            % (3 + pages, pages + 1, len(packed_bytes)) + packed_bytes + b"\nendstream\nendobj\n")
    return out + b"trailer\n<< /Root 1 0 R >>\n%%EOF\n"


# -- the bound against the emulators' rules, directly ---------------------------------------


@pytest.mark.parametrize("vendor", sorted(MODELS))
def test_the_bound_is_never_under_what_the_emulators_bill_for_an_image(vendor: str) -> None:
    rng = random.Random(f"images-{vendor}")
    for _ in range(400):
        data, size = random_image(rng, gif=vendor != "gemini")
        assert image_size(data) == size  # the header reader reads every format's size
        detail = rng.choice([None, "auto", "low", "high"]) if vendor == "openai" else None
        image = ld.Image(data, detail=detail)
        for model in MODELS[vendor]:
            billed = billed_tokens(vendor, model, "image", data, detail)
            bound = attachment_bound(image, vendor, model)
            assert billed <= bound, (vendor, model, size, detail, billed, bound)
            assert bound <= attachment_bound(image, None)  # no vendor: the most of them all
    # Pixels cost: a large photo is billed far past its one line of prompt text.
    photo = ld.Image(_png(3000, 2000))
    assert all(billed_tokens(vendor, m, "image", photo.data) >= 258 for m in MODELS[vendor])


@pytest.mark.parametrize("vendor", sorted(MODELS))
def test_the_bound_is_never_under_what_the_emulators_bill_for_a_pdf(vendor: str) -> None:
    rng = random.Random(f"pdfs-{vendor}")
    for _ in range(60):
        pages, packed = rng.randint(1, 40), rng.random() < 0.5
        data = make_pdf(pages, packed=packed)
        assert pdf_pages(data) == pages, (pages, packed)  # object streams are read too
        doc = ld.File(data)
        for model in MODELS[vendor]:
            assert billed_tokens(vendor, model, "pdf", data) <= attachment_bound(doc, vendor, model)
    # Pages the bytes do not show (encrypted, or hidden another way): the vendor's page limit.
    blind = ld.File(b"%PDF-1.7\n" + bytes(rng.getrandbits(8) for _ in range(2000)))
    assert pdf_pages(blind.data or b"") is None
    one = ld.File(make_pdf(1, packed=False))
    model = MODELS[vendor][0]
    assert attachment_bound(blind, vendor, model) >= \
        PAGE_LIMITS[vendor] * (attachment_bound(one, vendor, model) - 8)


# -- over loopback: what the emulators reported against what was reserved --------------------


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with start() as s:
        yield s


@pytest.fixture(autouse=True)
def _fresh(sim: SimServer) -> None:
    fresh(sim)


TARGETS = {"openai": ["openai:gpt-4o-mini", "openai:gpt-4.1-mini", "openai:gpt-5.4"],
           "anthropic": ["anthropic:claude-haiku-4-5", "anthropic:claude-opus-4-7"],
           "gemini": ["google:gemini-2.5-flash", "google:gemini-3-flash-preview"]}


def text_only(request: Any) -> Any:
    """The same request with its attachments left out (what the old bound counted)."""
    return replace(request, messages=tuple(replace(m, attachments=()) for m in request.messages))


def prompts(rng: random.Random, n: int, *, gemini: bool, pdfs: bool) -> list[list[Any]]:
    out = []
    for i in range(n):
        parts: list[Any] = [f"What is in these? #{i}"]
        for _ in range(rng.randint(1, 3)):
            if pdfs and rng.random() < 0.2:
                parts.append(ld.File(make_pdf(rng.randint(1, 6), packed=rng.random() < 0.5)))
            else:
                data, _ = random_image(rng, gif=not gemini)
                parts.append(ld.Image(data))
        out.append(parts)
    return out


def gather(d: Dispatcher, asks: list[list[Any]], target: str, **params: Any) -> list[Any]:
    async def main() -> list[Any]:
        return await asyncio.gather(*(d.asend(p, target, **params) for p in asks),
                                    return_exceptions=True)

    return asyncio.run(main())


@pytest.mark.parametrize("vendor", sorted(TARGETS))
def test_the_reserved_prompt_is_never_under_the_emulators_billed_input(sim: SimServer,
                                                                       vendor: str) -> None:
    rng = random.Random(f"loopback-{vendor}")
    beyond_text = 0
    with dispatcher(sim, retry=RetryPolicy.none()) as d:
        for target in TARGETS[vendor]:
            asks = prompts(rng, 50, gemini=vendor == "gemini", pdfs=True)
            out = gather(d, asks, target, max_tokens=16)
            for parts, r in zip(asks, out, strict=True):
                assert isinstance(r, Response), r
                request = d.request(parts, target, max_tokens=16)
                cand = d.plan(request).candidates[0]
                bound = d.router.worst_case(request, cand).prompt_tokens
                assert r.usage.input_tokens is not None
                assert r.usage.input_tokens <= bound, (target, r.usage, bound)
                beyond_text += r.usage.input_tokens > prompt_token_bound(text_only(request), cand)
    # The hole this closes: most of these calls bill more than their text could account for.
    assert beyond_text > len(TARGETS[vendor]) * 25


def billed_usd(responses: list[Any]) -> float:
    book = PriceBook()
    total = 0.0
    for r in responses:
        if isinstance(r, Response):
            usd = book.cost(r.vendor, r.model, r.usage).usd
            assert usd is not None
            total += usd
    return total


# gpt-4o-mini with no max_tokens (the model's output cap is reserved too); the others with a
# short answer, so what the images cost decides whether a call fits.
@pytest.mark.parametrize(("target", "limit", "params"), [
    ("openai:gpt-4o-mini", 0.05, {}),
    ("anthropic:claude-haiku-4-5", 0.03, {"max_tokens": 16}),
    ("google:gemini-2.0-flash", 0.004, {"max_tokens": 16})])
def test_concurrent_calls_with_images_never_overspend_a_small_budget(
        sim: SimServer, target: str, limit: float, params: dict[str, Any]) -> None:
    rng = random.Random(f"budget-{target}")
    asks = prompts(rng, 32, gemini=target.startswith("google"), pdfs=False)
    budget = Budget(limit)
    with dispatcher(sim, budget=budget, retry=RetryPolicy.none()) as d:
        worst = [d.router.worst_case(req, d.plan(req).candidates[0])
                 for req in (d.request(p, target, **params) for p in asks)]
        out = gather(d, asks, target, **params)
    assert sum(w.usd or 0 for w in worst) > limit  # the budget binds: not all fit at once
    assert all(isinstance(r, Response | BudgetExceededError) for r in out), \
        [r for r in out if not isinstance(r, Response | LLMDispatchError)]
    answered = [r for r in out if isinstance(r, Response)]
    assert answered
    assert billed_usd(out) <= limit
    assert budget.spent <= limit and budget.reserved == 0
    assert budget.spent == pytest.approx(billed_usd(out), abs=1e-9)


@pytest.mark.parametrize(("target", "most"), [("openai:gpt-4o", 85 + 8 * 170),
                                              ("openai:gpt-4o-mini", 2833 + 8 * 5667),
                                              ("anthropic:claude-haiku-4-5", 1800),
                                              ("anthropic:claude-opus-4-7", 4784),
                                              ("google:gemini-2.5-flash", 24 * 258),
                                              ("google:gemini-3-flash-preview", 1120)])
def test_an_image_by_url_reserves_the_vendors_per_image_maximum(sim: SimServer, target: str,
                                                                most: int) -> None:
    url = ld.Image("https://example.com/charts/sales.png")
    with dispatcher(sim) as d:
        request = d.request(["Describe this chart.", url], target, max_tokens=16)
        cand = d.plan(request).candidates[0]
        reserved = d.router.worst_case(request, cand).prompt_tokens
        assert reserved - prompt_token_bound(text_only(request), cand) >= most
        r = d.send(["Describe this chart.", url], target, max_tokens=16)
    assert r.usage.input_tokens is not None and r.usage.input_tokens <= reserved
