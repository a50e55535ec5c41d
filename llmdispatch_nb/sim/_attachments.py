"""Images and PDFs in emulated requests: read each vendor's part, refuse what its API
refuses (in its words), and say what was attached so the simulated answer can mention it.

A part the model may read becomes one line of prompt text, such as
"[attached image: PNG, 4×3 px, 73 bytes]": it is counted as input, and the answer, which
quotes the question, shows the image was seen. The model catalogue says which models take
images and PDFs (`input_modalities`), as it tells the adapters. Wire shapes and limits:
`../shared/reference/vendor-protocols.md` section 14; the error texts are the vendors' own
as reported in public issue threads (OpenAI's "Invalid content type. image_url is only
supported by certain models.", Anthropic's "image exceeds 5 MB maximum: N bytes > 5242880
bytes", Gemini's "Unsupported MIME type: image/gif").

Each attachment is also billed as input by the vendor's rules for pixels and pages
(`*_media_tokens`, from `llmdispatch_nb._attachment_tokens`, whose bound the budget
reserves), so demo mode's costs resemble the real ones.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from typing import Any

from .._attachment_tokens import billed_tokens, image_size
from .._attachments import sniff

MB = 1024 * 1024
OPENAI_IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
ANTHROPIC_IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
GEMINI_TYPES = ("image/png", "image/jpeg", "image/webp", "image/heic", "image/heif",
                "application/pdf")
MARK = "[attached "


class Refusal(Exception):
    """What the vendor's API says about an attachment: message, param (OpenAI), code."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = code


def decode(data: Any) -> bytes | None:
    """Base64 in either alphabet (python-genai sends the URL-safe one), or None."""
    if not isinstance(data, str):
        return None
    try:
        if "-" in data or "_" in data:
            return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None


def describe(media_type: str, data: bytes | None, url: str | None = None) -> str:
    """The line the answer quotes: what kind of thing, its size."""
    kind = "PDF" if media_type == "application/pdf" else "image"
    if data is None:  # a URL the vendor would fetch (the emulators fetch nothing)
        return f"{MARK}{kind} at {url}]"
    fmt = media_type.split("/")[-1].upper()
    size = image_size(data) if kind == "image" else None
    dims = f", {size[0]}×{size[1]} px" if size else ""
    return f"{MARK}{kind}: {fmt}{dims}, {len(data):,} bytes]"


def accepts(info: Any, modality: str) -> bool:
    """The catalogue's word on a model (a model it lacks is let through)."""
    return not getattr(info, "known", False) or modality in (info.input_modalities or ())


# -- OpenAI Chat Completions ----------------------------------------------------------------


def openai_seen(content: Any, i: int, info: Any) -> str:
    """The lines for a message's image and file parts; raises `Refusal` as OpenAI does."""
    if not isinstance(content, list):
        return ""
    seen = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in ("image_url", "file"):
            continue
        if not accepts(info, "image" if kind == "image_url" else "pdf"):
            raise Refusal(f"Invalid content type. {kind} is only supported by certain models.",
                          f"messages.[{i}].content.[{j}].type")
        if kind == "image_url":
            spec = part.get("image_url")
            url = spec.get("url") if isinstance(spec, dict) else None
            if not isinstance(url, str):
                raise Refusal(f"Missing required parameter: 'messages[{i}].content[{j}]."
                              f"image_url.url'.", f"messages.[{i}].content.[{j}].image_url.url",
                              "missing_required_parameter")
            if not url.startswith("data:"):
                seen.append(describe("image/" + url.rsplit(".", 1)[-1].lower(), None, url))
                continue
            head, _, payload = url.partition(",")
            data = decode(payload) if head.endswith(";base64") else None
            media = sniff(data) if data else None
            if data is None or media not in OPENAI_IMAGE_TYPES or len(data) > 20 * MB:
                raise Refusal("You uploaded an unsupported image. Please make sure your image is "
                              "below 20 MB in size and is of one the following formats: ['png', "
                              "'jpeg', 'gif', 'webp'].", f"messages.[{i}].content.[{j}].image_url",
                              "invalid_image_format")
            seen.append(describe(media, data))
        else:
            spec = part.get("file") if isinstance(part, dict) else None
            spec = spec if isinstance(spec, dict) else {}
            if "file_data" in spec and not spec.get("filename"):
                raise Refusal(f"Missing required parameter: 'messages[{i}].content[{j}].file."
                              f"file_id'.", f"messages[{i}].content[{j}].file.file_id",
                              "missing_required_parameter")
            raw = spec.get("file_data")
            pdf_b64 = raw.partition(",")[2] if isinstance(raw, str) and raw.startswith("data:") \
                else raw  # the SDK's docstring says plain base64: both are read
            data = decode(pdf_b64)
            if data is None or sniff(data) != "application/pdf":
                raise Refusal("Invalid file data. Expected a base64-encoded PDF.",
                              f"messages[{i}].content[{j}].file.file_data", "invalid_value")
            seen.append(describe("application/pdf", data))
    return " ".join(seen)


# -- Anthropic Messages ---------------------------------------------------------------------


def anthropic_seen(block: Mapping[str, Any], where: str) -> str:
    """The line for an `image` or `document` block; raises `Refusal` as Anthropic does."""
    source = block.get("source")
    if not isinstance(source, dict):
        raise Refusal(f"{where}.source: Field required")
    if source.get("type") == "url":
        url = source.get("url")
        return describe("application/pdf" if block["type"] == "document" else "image/url",
                        None, str(url))
    if source.get("type") != "base64":
        raise Refusal(f"{where}.source.type: Input tag {source.get('type')!r} found using 'type' "
                      f"does not match any of the expected tags: 'base64', 'url'")
    media = source.get("media_type")
    allowed = ANTHROPIC_IMAGE_TYPES if block["type"] == "image" else ("application/pdf",)
    if media not in allowed:
        raise Refusal(f"{where}.source.base64.media_type: Input should be "
                      + ", ".join(f"'{t}'" for t in allowed))
    data = decode(source.get("data"))
    if data is None:
        raise Refusal(f"{where}.source.base64.data: The image data is not valid base64"
                      if block["type"] == "image" else
                      f"{where}.source.base64.data: The PDF data is not valid base64")
    if block["type"] == "image":
        if len(data) > 5 * MB:
            raise Refusal(f"{where}.source.base64: image exceeds 5 MB maximum: {len(data)} bytes "
                          f"> {5 * MB} bytes")
        if sniff(data) != media:
            raise Refusal(f"{where}.source.base64.data: Image does not match the provided media "
                          f"type {media}")
    return describe(str(media), data)


def anthropic_media_refusal(kinds: set[str], info: Any, served: str) -> str | None:
    """Anthropic's word when the model reads no images (or PDFs) but was sent some."""
    if "image" in kinds and not accepts(info, "image"):
        return f"{served} does not support image input."
    if "document" in kinds and not accepts(info, "pdf"):
        return f"{served} does not support PDF input."
    return None


# -- Gemini generateContent -----------------------------------------------------------------


def gemini_seen(part: Mapping[str, Any], where: str,
                invalid: Callable[[str], Exception]) -> str | None:
    """The line for an `inlineData` / `fileData` part (None: neither); raises `invalid(...)`
    with Google's words."""
    blob = part.get("inlineData", part.get("inline_data"))
    if isinstance(blob, dict):
        media = blob.get("mimeType", blob.get("mime_type"))
        if not isinstance(media, str) or not media:
            raise invalid(f"* GenerateContentRequest.{where}.inline_data.mime_type: "
                          f"mime_type must be set\n")
        if media not in GEMINI_TYPES:
            raise invalid(f"Unsupported MIME type: {media}")
        data = decode(blob.get("data"))
        if data is None:
            raise invalid(f"Invalid value at '{where}.inline_data.data' (TYPE_BYTES), Base64 "
                          f"decoding failed")
        return describe(media, data)
    ref = part.get("fileData", part.get("file_data"))
    if isinstance(ref, dict):
        return describe(str(ref.get("mimeType", ref.get("mime_type", "image/unknown"))), None,
                        str(ref.get("fileUri", ref.get("file_uri"))))
    return None


def gemini_media_refusal(contents: Any, info: Any) -> str | None:
    """Google's word when the model reads no images (or PDFs) but was sent some."""
    for turn in contents if isinstance(contents, list) else ():
        for part in turn.get("parts") or () if isinstance(turn, dict) else ():
            blob = part.get("inlineData", part.get("inline_data")) if isinstance(part, dict) \
                else None
            if isinstance(blob, dict):
                media = str(blob.get("mimeType", blob.get("mime_type", "")))
                if not accepts(info, "pdf" if media == "application/pdf" else "image"):
                    return f"Unsupported MIME type: {media}"
    return None


# -- billed input: the vendors' rules for pixels and pages ----------------------------------


def _parts(container: Any, key: str) -> list[Any]:
    """The list under `key` of each dict in `container` (messages' content, turns' parts)."""
    out: list[Any] = []
    for item in container if isinstance(container, list) else ():
        inner = item.get(key) if isinstance(item, dict) else None
        if isinstance(inner, list):
            out.extend(p for p in inner if isinstance(p, dict))
    return out


def openai_media_tokens(messages: Any, model: str) -> int:
    """Input tokens OpenAI bills for the messages' `image_url` and `file` parts."""
    total = 0
    for part in _parts(messages, "content"):
        if part.get("type") == "image_url" and isinstance(part.get("image_url"), dict):
            spec = part["image_url"]
            url = spec.get("url") if isinstance(spec.get("url"), str) else ""
            data = decode(url.partition(",")[2]) if url.startswith("data:") else None
            total += billed_tokens("openai", model, "image", data, spec.get("detail"))
        elif part.get("type") == "file" and isinstance(part.get("file"), dict):
            raw = part["file"].get("file_data")
            raw = raw.partition(",")[2] if isinstance(raw, str) and raw.startswith("data:") else raw
            total += billed_tokens("openai", model, "pdf", decode(raw))
    return total


def anthropic_media_tokens(messages: Any, model: str) -> int:
    """Input tokens Anthropic bills for the messages' `image` and `document` blocks."""
    total = 0
    for block in _parts(messages, "content"):
        if block.get("type") in ("image", "document") and isinstance(block.get("source"), dict):
            source = block["source"]
            data = decode(source.get("data")) if source.get("type") == "base64" else None
            total += billed_tokens("anthropic", model,
                                   "image" if block["type"] == "image" else "pdf", data)
    return total


def gemini_media_tokens(contents: Any, model: str) -> int:
    """Input tokens Gemini bills for the turns' `inlineData` and `fileData` parts."""
    total = 0
    for part in _parts(contents, "parts"):
        blob = part.get("inlineData", part.get("inline_data"))
        ref = part.get("fileData", part.get("file_data"))
        spec = blob if isinstance(blob, dict) else ref if isinstance(ref, dict) else None
        if spec is None:
            continue
        media = str(spec.get("mimeType", spec.get("mime_type", "")))
        data = decode(spec.get("data")) if spec is blob else None
        total += billed_tokens("gemini", model,
                               "pdf" if media == "application/pdf" else "image", data)
    return total
