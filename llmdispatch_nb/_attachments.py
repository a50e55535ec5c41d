"""Images and files (PDFs) in prompts: one shape for every vendor, mapped to each one's part.

    import llmdispatch_nb as ld
    d.send(["What does this chart show?", ld.Image("chart.png")], "claude")
    d.send([{"role": "user", "content": ["Summarise", ld.File("report.pdf")]}], "gemini")

`Image(source)` takes a path, bytes, a PIL image (if PIL is installed; it is not a
dependency) or an http(s)/data URL; `File(source)` a path or bytes of a PDF. Both return an
`Attachment` (`_types.py`), whose media type is read from the bytes themselves (a PNG named
.jpg is still a PNG: the vendors check, and refuse a mismatch).

Before a byte leaves, `check(vendor, model, request)` refuses what the vendor would refuse,
in one clear line: a model the catalogue says takes no images (or no PDFs), a media type
the vendor does not read, an image or a request over the vendor's size limit (limits from
`../shared/reference/vendor-protocols.md` section 14). The `*_part` functions build each
vendor's wire shape: OpenAI `image_url` data URLs and `file` parts, Anthropic `image` /
`document` blocks with a base64 source, Gemini `inlineData` (or `fileData` for a URL).
"""

from __future__ import annotations

import base64
import binascii
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ._types import Attachment, Message, Request
from .errors import RequestValidationError

MB = 1024 * 1024
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "image/heic", "image/heif")
PDF = "application/pdf"

# Per vendor: the image types it reads, the most one image may weigh, the most all the
# attachments of one request may weigh (decoded bytes), the most one PDF may weigh.
LIMITS: dict[str, dict[str, Any]] = {
    "openai": {"types": ("image/png", "image/jpeg", "image/gif", "image/webp"),
               "image": 20 * MB, "request": 50 * MB, "pdf": 32 * MB},
    "anthropic": {"types": ("image/png", "image/jpeg", "image/gif", "image/webp"),
                  "image": 5 * MB, "request": 32 * MB, "pdf": 32 * MB},
    "gemini": {"types": ("image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"),
               "image": 100 * MB, "request": 100 * MB, "pdf": 50 * MB},
}
# OpenAI-shaped vendors (Azure, local servers) take OpenAI's parts and limits.
LIMITS["azure"] = LIMITS["openai"]


def sniff(data: bytes) -> str | None:
    """The media type the bytes themselves say (None: not one we know)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1"):
        return "image/heic"
    if data.startswith(b"%PDF-"):
        return PDF
    return None


def _is_pil(value: Any) -> bool:
    return type(value).__module__.startswith("PIL.") and hasattr(value, "save")


def _data_url(url: str) -> bytes:
    head, _, payload = url.partition(",")
    if not head.endswith(";base64"):
        raise RequestValidationError("a data: URL must be base64 (data:image/png;base64,...)")
    try:  # the type it names is not kept: the bytes say what they are
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestValidationError(f"the data: URL is not valid base64 ({exc})") from None


def _read(source: Any, what: str) -> tuple[bytes | None, str | None, str | None]:
    """(bytes, url, file name) from a path, bytes, a PIL image or a URL."""
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source), None, None
    if _is_pil(source):
        buf = io.BytesIO()
        source.save(buf, format="PNG")  # lossless, and every vendor reads PNG
        return buf.getvalue(), None, None
    if isinstance(source, str) and source.startswith(("http://", "https://")):
        return None, source, source.rsplit("/", 1)[-1] or None
    if isinstance(source, str) and source.startswith("data:"):
        return _data_url(source), None, None
    if isinstance(source, str | os.PathLike):
        path = Path(source).expanduser()
        if not path.is_file():
            raise RequestValidationError(f"no {what} at {str(path)!r} (give a path to a file, "
                                         f"bytes, or an http(s) URL)")
        return path.read_bytes(), None, path.name
    raise RequestValidationError(f"cannot read {what} from a {type(source).__name__}; give a "
                                 f"path, bytes, a PIL image or a URL")


# Named like a type: ld.Image("chart.png") reads as the thing it builds.
def Image(source: Any, *, media_type: str | None = None, detail: str | None = None) -> Attachment:
    """An image for a prompt, from a path, bytes, a PIL image or an http(s)/data URL.
    Its media type is read from the bytes; `media_type` is for a URL whose name does not
    say it. `detail` ("auto", "low", "high") is OpenAI's; the others ignore it."""
    data, url, name = _read(source, "image")
    if detail is not None and detail not in ("auto", "low", "high"):
        raise RequestValidationError(f"detail must be 'auto', 'low' or 'high', got {detail!r}")
    if data is not None:
        found = sniff(data)
        if found is None or not found.startswith("image/"):
            raise RequestValidationError(
                f"the image is not PNG, JPEG, GIF, WEBP or HEIC (its first bytes are "
                f"{data[:8]!r}); {'it is a PDF: use ld.File' if found == PDF else 'convert it'}")
        media_type = found  # the bytes' word beats a name's or a caller's: vendors check
    elif media_type is None:
        ext = (name or "").rsplit(".", 1)[-1].lower()
        media_type = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg",
                      "gif": "image/gif", "webp": "image/webp"}.get(ext, "image/jpeg")
    return Attachment("image", media_type, data, url, name, detail)


def File(source: Any, *, name: str | None = None) -> Attachment:
    """A document for a prompt: a PDF, from a path, bytes or an http(s) URL."""
    data, url, found_name = _read(source, "file")
    if data is not None and sniff(data) != PDF:
        kind = sniff(data)
        hint = "; it is an image: use ld.Image" if kind and kind.startswith("image/") else ""
        raise RequestValidationError(f"only PDF files can be sent (the bytes start "
                                     f"{data[:8]!r}){hint}")
    return Attachment("file", PDF, data, url, name or found_name or "document.pdf")


def user_turn(parts: Iterable[Any]) -> Message:
    """One user turn from a content list: strings (text), attachments, PIL images and
    `{"type": "text", "text": ...}` dicts; the text pieces joined by blank lines."""
    texts: list[str] = []
    attached: list[Attachment] = []
    for i, p in enumerate(parts):
        if isinstance(p, str):
            texts.append(p)
        elif isinstance(p, Attachment):
            attached.append(p)
        elif _is_pil(p):
            attached.append(Image(p))
        elif isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str):
            texts.append(p["text"])
        else:
            raise RequestValidationError(
                f"part {i} of the prompt is a {type(p).__name__}; give text, ld.Image(...) or "
                f"ld.File(...)")
    return Message("user", "\n\n".join(texts), attachments=tuple(attached))


# -- before sending -----------------------------------------------------------------------


def _size(n: int) -> str:
    return f"{n / MB:.1f} MB" if n >= MB / 10 else f"{n:,} bytes"


def check(vendor: str, model: str, request: Request, *, limits_of: str | None = None) -> None:
    """Refuse, before sending, what `vendor`'s API would refuse of the request's images and
    files: the model takes none (the catalogue's word; an unknown model is sent them), a
    media type the vendor does not read, an image or a request over its size limit."""
    attached = request.attachments
    if not attached:
        return
    from .catalogue import lookup

    info = lookup(vendor, model, warn=False)
    accepts = set(info.input_modalities or ()) if info.known else {"image", "pdf"}
    where = f"{vendor}:{model}"
    for a in attached:
        need = "image" if a.kind == "image" else "pdf"
        if need not in accepts:
            what = "images" if need == "image" else "PDF files"
            raise RequestValidationError(
                f"{where} does not take {what} (the model catalogue gives its inputs as "
                f"{', '.join(sorted(accepts)) or 'text'}); pick a model that does, or correct "
                f"the catalogue with llmdispatch_nb.catalogue.override({vendor!r}, {model!r}, "
                f"input_modalities=(...))")
    rules = LIMITS.get(limits_of or vendor)
    if rules is None:
        return  # an OpenAI-compatible server: its own limits, it decides
    total = 0
    for a in attached:
        if a.kind == "image" and a.media_type not in rules["types"]:
            raise RequestValidationError(
                f"{where} does not read {a.media_type} images (it reads "
                f"{', '.join(t.split('/')[1].upper() for t in rules['types'])}); convert it")
        if a.size is None:
            continue
        cap = rules["image"] if a.kind == "image" else rules["pdf"]
        if a.size > cap:
            raise RequestValidationError(
                f"{'an image' if a.kind == 'image' else 'a PDF'} of {_size(a.size)} is over "
                f"{vendor}'s limit of {_size(cap)} per {'image' if a.kind == 'image' else 'file'}"
                f"; make it smaller before sending")
        total += a.size
    if total > rules["request"]:
        raise RequestValidationError(
            f"the request's images and files weigh {_size(total)}, over {vendor}'s limit of "
            f"{_size(rules['request'])} per request; send fewer or smaller ones")


# -- each vendor's shape --------------------------------------------------------------------


def b64(a: Attachment) -> str:
    assert a.data is not None
    return base64.b64encode(a.data).decode("ascii")


def openai_part(a: Attachment) -> dict[str, Any]:
    """Chat Completions: `image_url` (a data URL or the URL), `file` with `file_data` (a
    PDF as a data URL, named: without a filename OpenAI asks for a file_id)."""
    if a.kind == "image":
        image: dict[str, Any] = {"url": a.url if a.data is None else
                                 f"data:{a.media_type};base64,{b64(a)}"}
        if a.detail:
            image["detail"] = a.detail
        return {"type": "image_url", "image_url": image}
    if a.data is None:
        raise RequestValidationError("OpenAI Chat Completions takes no PDF by URL (only the "
                                     "Responses API does); give the file's bytes or path")
    return {"type": "file", "file": {"filename": a.name or "document.pdf",
                                     "file_data": f"data:{a.media_type};base64,{b64(a)}"}}


def anthropic_block(a: Attachment) -> dict[str, Any]:
    """Messages: an `image` or `document` block with a base64 source (or a url source)."""
    source: dict[str, Any] = {"type": "url", "url": a.url} if a.data is None else \
        {"type": "base64", "media_type": a.media_type, "data": b64(a)}
    return {"type": "image" if a.kind == "image" else "document", "source": source}


def gemini_part(a: Attachment) -> dict[str, Any]:
    """generateContent: `inlineData` (standard base64; the API reads both alphabets), or
    `fileData` with the URL."""
    if a.data is None:
        return {"fileData": {"mimeType": a.media_type, "fileUri": a.url}}
    return {"inlineData": {"mimeType": a.media_type, "data": b64(a)}}


def ledger_view(attached: Sequence[Attachment]) -> list[dict[str, Any]]:
    """What the ledger keeps of each attachment: kind, type, size and hash (never bytes)."""
    out = []
    for a in attached:
        row: dict[str, Any] = {"kind": a.kind, "media_type": a.media_type}
        if a.data is not None:
            row.update(bytes=a.size, sha256=a.sha256)
        else:
            row["url"] = a.url
        out.append(row)
    return out
