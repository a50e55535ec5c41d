"""How many input tokens an image or a PDF is billed for, per vendor: an upper bound for the
budget's reservation, and the typical figure the emulators bill and routing estimates use.

A prompt's text is bounded by its UTF-8 bytes (`routing/_groups.py`), but an attachment is
billed by the vendor's own rules for pixels and pages, which no byte count bounds (a 70 kB
PNG of 2000x2000 px costs more than a page of text). The rules, from the vendors' docs
(`../shared/reference/vendor-protocols.md` section 14 and the pages named below):

- OpenAI (and Azure) images: tile models fit the image in 2048x2048, scale its short side to
  768 px and bill `base + tile x (512 px tiles)` (gpt-4o/4.1 85+170, gpt-4o-mini 2833+5667,
  o1/o3 75+150, gpt-5 70+140, computer-use 65+129); `detail: low` bills the base only. Patch
  models (gpt-4.1-mini/nano, gpt-5-mini/nano, o4-mini) bill 32 px patches, at most 1536, times
  1.62 / 2.46 / 1.72; gpt-5.4 and later 32 px patches x 1.2, up to 10,000 (2,500 at "high").
  PDFs: the extracted text plus an image of each page.
- Anthropic images: about w x h / 750 tokens after the long edge is scaled to 1568 px, at most
  ~1,600 (Claude 3 to 4.6); Opus 4.7 and later read up to 2576 px, one token per 28 px square,
  at most 4,784. PDFs: 1,500-3,000 text tokens a page plus the page as an image.
- Gemini images: 258 tokens up to 384 px on both sides, else 258 per 768 px tile (2.x); Gemini
  3 bills by media resolution, 1,120 an image at its default (high). PDFs: 258 a page (2.x),
  560 a page at Gemini 3's default (medium).

Where a rule is unsure the bound takes the larger reading (OpenAI: the short side scaled up
as well as down, and every rule a model's name matches; Anthropic: 1,800 for the "~1,600";
PDF text: 3,000 a page; Gemini 2.x: 768 px tiles or the crop-unit tiling, whichever is more,
in a 3072 px box; an unknown model: the most any model of the vendor bills; an unknown
vendor: the most of all). The emulators bill the plain reading, never above the bound.
An image whose size the bytes do not say, or a URL, is bounded by the vendor's per-image
maximum; a PDF whose pages cannot be counted by the vendor's page limit.
"""

from __future__ import annotations

import math
import re
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from ._types import Attachment

# Tokens a part costs beyond its pixels or pages (the block's own markers; Anthropic counts
# 3 for an image block): added once per attachment to the bound.
PART_FRAMING = 8

# -- reading the bytes ----------------------------------------------------------------------


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG, GIF, JPEG or WebP header (None: not found or not one)."""
    try:
        if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
            w, h = struct.unpack(">II", data[16:24])
            return int(w), int(h)
        if data.startswith((b"GIF87a", b"GIF89a")):
            w, h = struct.unpack("<HH", data[6:10])
            return int(w), int(h)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp_size(data)
        if data.startswith(b"\xff\xd8"):
            return _jpeg_size(data)
    except struct.error:  # a header cut short
        return None
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a" and len(data) >= 30:
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i, n = 2, len(data)
    for _ in range(10_000):  # segments, bounded: a crafted file cannot make this loop long
        while i < n and data[i] == 0xFF and i + 1 < n and data[i + 1] == 0xFF:
            i += 1  # fill bytes before a marker
        if i + 4 > n or data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return int(w), int(h)
        if length < 2:
            return None
        i += 2 + length
    return None


_PAGE = re.compile(rb"/Type\s*/Page(?![A-Za-z0-9#])")
_COUNT = re.compile(rb"/Count\s+(\d{1,9})")
_STREAM = re.compile(rb"stream\r?\n")
_INFLATE_BUDGET = 64 * 1024 * 1024  # bytes of object streams inflated per PDF, at most


def pdf_pages(data: bytes) -> int | None:
    """Pages of a PDF read from its bytes: the most of its `/Type /Page` objects and its
    page trees' `/Count`, object streams (PDF 1.5+, compressed) inflated within a bound.
    None when neither is found (encrypted, or hidden in a way this does not read)."""
    found = len(_PAGE.findall(data))
    count = max((int(m) for m in _COUNT.findall(data)), default=0)
    if b"/ObjStm" in data:  # page objects may be inside compressed object streams
        budget = _INFLATE_BUDGET
        for k, m in enumerate(_STREAM.finditer(data)):
            if budget <= 0 or k >= 20_000:
                break
            end = data.find(b"endstream", m.end())
            if end < 0:
                break
            try:
                inflated = zlib.decompressobj().decompress(data[m.end():end], budget)
            except zlib.error:
                continue  # an image or another filter: not an object stream
            budget -= len(inflated)
            found += len(_PAGE.findall(inflated))
            count = max([count, *(int(c) for c in _COUNT.findall(inflated))])
    pages = max(found, count)
    return pages or None


# -- the vendors' rules ---------------------------------------------------------------------


@dataclass(frozen=True)
class _OpenAIRule:
    base: int = 0  # tile models: tokens for the low-resolution view, always billed
    tile: int = 0  # tile models: tokens per 512 px tile
    patch_multiplier: float = 0.0  # patch models: tokens per 32 px patch
    patch_cap: int = 1536  # patch models: the most patches an image is scaled to
    high_cap: int | None = None  # a lower cap for detail "high" (gpt-5.4 on: "auto" is more)


# Searched anywhere in the name (dated, fine-tuned "ft:gpt-4o-mini:..." and Azure-mapped
# names): the emulators bill by the first rule that matches, the bound takes the most of all
# that match. https://platform.openai.com/docs/guides/images-vision. gpt-5.4 and later bill
# 32 px patches x 1.2, up to 10,000 patches at "auto" and 2,500 at "high": not in the guide
# at hand, read from measured counts (huggingface.co/datasets/JOHNISKING/image-token-cost).
_OPENAI_RULES: tuple[tuple[re.Pattern[str], _OpenAIRule], ...] = tuple(
    (re.compile(p), r) for p, r in (
        (r"gpt-4o-mini", _OpenAIRule(2833, 5667)),
        (r"gpt-4\.1-mini|gpt-5(\.\d+)?-mini", _OpenAIRule(patch_multiplier=1.62)),
        (r"gpt-4\.1-nano|gpt-5(\.\d+)?-nano", _OpenAIRule(patch_multiplier=2.46)),
        (r"o4-mini", _OpenAIRule(patch_multiplier=1.72)),
        (r"gpt-(5\.([4-9]|\d{2,})|[6-9])", _OpenAIRule(patch_multiplier=1.2, patch_cap=10_000,
                                                     high_cap=2_500)),
        (r"computer-use", _OpenAIRule(65, 129)),
        (r"(^|[:/])o[13](-|$)", _OpenAIRule(75, 150)),
        (r"gpt-5", _OpenAIRule(70, 140)),
        (r"gpt-4o|gpt-4\.1|gpt-4\.5|gpt-4-turbo|gpt-4-vision|chatgpt-4o", _OpenAIRule(85, 170)),
    ))
_OPENAI_TYPICAL = _OpenAIRule(85, 170)  # an unknown model's typical figure (gpt-4o's)
_PATCH = 32


def _openai_rules(model: str) -> list[_OpenAIRule]:
    name = model.lower()
    return [rule for pattern, rule in _OPENAI_RULES if pattern.search(name)]


def _openai_rule(model: str) -> _OpenAIRule | None:
    return next(iter(_openai_rules(model)), None)


def _openai_tiles(w: float, h: float, *, upscale: bool) -> int:
    s = min(1.0, 2048 / max(w, h))
    w, h = w * s, h * s
    s = 768 / min(w, h)
    if not upscale:
        s = min(1.0, s)
    return math.ceil(w * s / 512 - 1e-9) * math.ceil(h * s / 512 - 1e-9)


def _openai_image(rule: _OpenAIRule, size: tuple[int, int] | None, detail: str | None,
                  bound: bool) -> int:
    if rule.patch_multiplier:
        # Past the cap the image is shrunk until its patches fit: the cap bounds the count.
        cap = rule.high_cap if detail == "high" and rule.high_cap else rule.patch_cap
        if size is None:
            patches = cap
        else:
            w, h = size
            patches = min(math.ceil(w / _PATCH) * math.ceil(h / _PATCH), cap)
        return math.ceil(patches * rule.patch_multiplier)
    if detail == "low":
        return rule.base
    if size is None:
        return rule.base + rule.tile * 8  # 768 x 2048 is the most tiles: 2 x 4
    w, h = max(1, size[0]), max(1, size[1])
    # Whether a small image's short side is scaled up to 768 px is not said plainly: the
    # bound takes the larger count, the emulator bills the image as sent (no upscaling).
    tiles = max(_openai_tiles(w, h, upscale=True), _openai_tiles(w, h, upscale=False)) \
        if bound else _openai_tiles(w, h, upscale=False)
    return rule.base + rule.tile * tiles


def _anthropic_high(model: str) -> bool:
    """Claude Opus 4.7 and later read images up to 2576 px; earlier ones up to 1568 px. A
    name that says no version is taken as the larger."""
    m = re.search(r"claude-(?:(?:opus|sonnet|haiku|instant)-)?(\d+)(?:[-.](\d{1,2})(?!\d))?",
                  model.lower())
    if m is None:
        return True
    version = int(m.group(1)) + int(m.group(2) or 0) / 10
    return version >= 4.7


def _scaled(w: int, h: int, longest: int) -> tuple[float, float]:
    s = min(1.0, longest / max(w, h))
    return w * s, h * s


_ANTHROPIC_STANDARD_BOUND = 1800


def _anthropic_image(model: str, size: tuple[int, int] | None, bound: bool) -> int:
    # https://docs.claude.com/en/docs/build-with-claude/vision ("Evaluate image size")
    if _anthropic_high(model):
        if size is None:
            return 4784
        w, h = _scaled(max(1, size[0]), max(1, size[1]), 2576)
        return min(math.ceil(w / 28 - 1e-9) * math.ceil(h / 28 - 1e-9), 4784)
    # "More than ~1,600 tokens" is scaled down: the bound allows for the "~" (counts up to
    # 1,661 were measured for large images), the emulators bill the formula, at most 1,600.
    cap = _ANTHROPIC_STANDARD_BOUND if bound else 1600
    if size is None:
        return cap
    w, h = _scaled(max(1, size[0]), max(1, size[1]), 1568)
    return min(math.ceil(w * h / 750), cap)


def _gemini_version(model: str) -> int | None:
    m = re.search(r"gemini-(\d+)", model.lower())
    return int(m.group(1)) if m else None


def _gemini_image(model: str, size: tuple[int, int] | None, bound: bool) -> int:
    # https://ai.google.dev/gemini-api/docs/tokens and .../media-resolution
    version = _gemini_version(model)
    if version is not None and version >= 3:
        return 1120  # media resolution high, the default for images
    v2 = _gemini2_image(size, bound)
    return v2 if version is not None else max(v2, 1120)


def _gemini2_image(size: tuple[int, int] | None, bound: bool) -> int:
    if size is None:
        return 258 * 24  # the most tiles the bound below gives (3072 x 384 by crop units)
    w, h = max(1, size[0]), max(1, size[1])
    if w <= 384 and h <= 384:
        return 258
    sw, sh = _scaled(w, h, 3072)  # Google scales large images to fit 3072 x 3072
    tiles = math.ceil(sw / 768 - 1e-9) * math.ceil(sh / 768 - 1e-9)
    if bound:
        # "Cropped and scaled as needed into tiles of 768x768": how is not published; the
        # crop-unit reading (a unit of the short side / 1.5, at least 256 px) gives more
        # tiles for a long thin image, so the bound takes it when larger.
        unit = max(256.0, min(sw, sh) / 1.5)
        tiles = max(tiles, math.ceil(sw / unit - 1e-9) * math.ceil(sh / unit - 1e-9))
    return 258 * tiles


# PDFs: per page, the text the vendor extracts and the page as an image. Text per page is
# the least certain figure here: Anthropic says 1,500-3,000 a page "depending on content
# density"; the bound takes 3,000, the emulators bill 1,500.
_PAGE_TEXT_BOUND = 3000
_PAGE_TEXT_TYPICAL = 1500
_PAGE_PIXELS = (1224, 1584)  # a US Letter page rendered at 144 dpi, as the emulators bill it
# Pages a request may carry per vendor: more are refused (so never billed). Anthropic says
# 100 (some newer models 600: the larger is used); Gemini 1,000; OpenAI's limit was not
# found (vendor-protocols.md section 14): 100 as for its files guide, a stated guess.
PAGE_LIMITS = {"openai": 100, "anthropic": 600, "gemini": 1000}


def _pdf(vendor: str, model: str, pages: int | None, bound: bool) -> int:
    n = min(pages, PAGE_LIMITS[vendor]) if pages else PAGE_LIMITS[vendor]
    if vendor == "gemini":
        version = _gemini_version(model)
        per = 560 if version is None or version >= 3 else 258
        return n * per
    text = _PAGE_TEXT_BOUND if bound else _PAGE_TEXT_TYPICAL
    if vendor == "anthropic":
        image = _anthropic_image(model, None if bound else _PAGE_PIXELS, bound)
    else:
        image = _openai_bound_image(model, None, "high") if bound else \
            _openai_image(_openai_rule(model) or _OPENAI_TYPICAL, _PAGE_PIXELS, "high", False)
    return n * (text + image)


def _openai_bound_image(model: str, size: tuple[int, int] | None, detail: str | None) -> int:
    # An unknown model may be any of them: gpt-4o-mini's multiplied tiles are the most.
    rules = _openai_rules(model) or [r for _, r in _OPENAI_RULES]
    return max(_openai_image(r, size, detail, True) for r in rules)


VENDORS = ("openai", "anthropic", "gemini")


def vendor_rules(kind: str | None) -> str | None:
    """The rules an endpoint kind bills by (Azure: OpenAI's), or None: unknown."""
    return {"openai": "openai", "azure": "openai", "anthropic": "anthropic",
            "gemini": "gemini", "google": "gemini"}.get(kind or "")


# Pages read per PDF, by its hash: a call reads them for routing, for each candidate's bound
# and for the limiter, and a 30 MB PDF takes ~0.1 s to scan.
_PAGES_SEEN: dict[str, int | None] = {}


def _size_of(a: Attachment) -> tuple[int, int] | None:
    return image_size(a.data) if a.data is not None else None


def _pages_of(a: Attachment) -> int | None:
    if a.data is None:
        return None
    if a.sha256 not in _PAGES_SEEN:
        if len(_PAGES_SEEN) >= 256:
            _PAGES_SEEN.clear()
        _PAGES_SEEN[a.sha256] = pdf_pages(a.data)
    return _PAGES_SEEN[a.sha256]


def attachment_bound(a: Attachment, vendor: str | None, model: str = "") -> int:
    """The most input tokens `vendor` can bill for `a` on `model` (rounded up, never under
    the rules above); an unknown vendor: the most of the three."""
    rules = vendor_rules(vendor)
    if rules is None:
        return max(attachment_bound(a, v, "") for v in VENDORS)
    if a.kind == "image":
        size = _size_of(a)
        if rules == "openai":
            tokens = _openai_bound_image(model, size, a.detail)
        elif rules == "anthropic":
            tokens = _anthropic_image(model, size, True)
        else:
            tokens = _gemini_image(model, size, True)
    else:
        tokens = _pdf(rules, model, _pages_of(a), True)
    return tokens + PART_FRAMING


def attachments_bound(attached: Iterable[Attachment], vendor: str | None, model: str = "") -> int:
    return sum(attachment_bound(a, vendor, model) for a in attached)


def billed_tokens(vendor: str, model: str, kind: str, data: bytes | None,
                  detail: str | None = None, *, pages: int | None = None) -> int:
    """What the emulators bill for one image (`kind` "image") or PDF: the vendor's rule on
    the image as sent (an unknown size or a URL: a 1024x768 image) or the pages counted
    (`pages`, when already read; unknown: one)."""
    rules = vendor_rules(vendor) or "openai"
    if kind == "image":
        size = (image_size(data) if data is not None else None) or (1024, 768)
        if rules == "openai":
            return _openai_image(_openai_rule(model) or _OPENAI_TYPICAL, size, detail, False)
        if rules == "anthropic":
            return _anthropic_image(model, size, False)
        return _gemini_image(model, size, False) if _gemini_version(model) is not None \
            else _gemini2_image(size, False)
    if pages is None and data is not None:
        pages = pdf_pages(data)
    return _pdf(rules, model, pages or 1, False)


def typical_tokens(attached: Iterable[Attachment], vendor: str | None = None,
                   model: str = "") -> int:
    """A typical figure for routing estimates (not a bound): what the emulators bill, on
    `vendor`'s rules or, with none, the most of the three."""
    total = 0
    for a in attached:
        kind = "image" if a.kind == "image" else "pdf"
        pages = _pages_of(a) if kind == "pdf" else None
        vendors: tuple[str, ...] = (vendor,) if vendor and vendor_rules(vendor) else VENDORS
        total += max(billed_tokens(v, model, kind, a.data, a.detail, pages=pages)
                     for v in vendors)
    return total
