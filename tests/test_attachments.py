"""Images and PDFs in prompts (issue 17.3): the request body each adapter sends, as the
emulator received it and as each vendor's SDK types read it; the emulators' answers and
their refusals in the vendors' words (through the official SDKs); the limits checked before
sending; the ledger and the cache keep a hash and a size, never the bytes."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pydantic
import pytest

import llmdispatch_nb as ld
from llmdispatch_nb import Dispatcher, catalogue
from llmdispatch_nb.errors import RequestValidationError
from llmdispatch_nb.ledger import Ledger
from llmdispatch_nb.sim import SimServer, serve
from llmdispatch_nb.vendors import Endpoint, Secret

from ._images import pdf, png
from .conftest import CANARY_KEY

genai = pytest.importorskip("google.genai")
from google.genai import errors as genai_errors  # noqa: E402
from google.genai import types as genai_types  # noqa: E402

TARGETS = {"openai": "openai:gpt-4o-mini", "anthropic": "anthropic:claude-haiku-4-5",
           "google": "gemini:gemini-2.5-flash"}
IMAGE = png(8, 6, note=b"canary-pixels-5d41402a")
B64 = base64.b64encode(IMAGE).decode()
QUESTION = "What colour is this picture?"
SEEN = f"[attached image: PNG, 8×6 px, {len(IMAGE)} bytes]"  # what the emulators quote


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with serve(["openai", "anthropic", "google"], time_scale=0) as s:
        yield s


def endpoints(sim: SimServer) -> list[Endpoint]:
    return [Endpoint("openai", "openai", sim.base_url("openai"), key=Secret(CANARY_KEY),
                     simulated=True),
            Endpoint("anthropic", "anthropic", sim.base_url("anthropic"),
                     key=Secret(CANARY_KEY), simulated=True),
            Endpoint("gemini", "gemini", sim.base_url("google"), key=Secret(CANARY_KEY),
                     simulated=True)]


@pytest.fixture
def d(sim: SimServer) -> Iterator[Dispatcher]:
    for emu in sim.emulators.values():
        emu.reset()
    with Dispatcher(endpoints(sim), dotenv=False, ledger=None, cache=False) as disp:
        yield disp


def ask(d: Dispatcher, prompt: Any, target: str, stream: bool) -> Any:
    if not stream:
        return d.send(prompt, target)
    s = d.stream(prompt, target)
    list(s)
    return s.response


def last_body(sim: SimServer, vendor: str) -> Any:
    return sim.emulators[vendor].requests.chat()[-1].body


# -- what each adapter sends ---------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_openai_sends_text_then_an_image_url_data_url(d: Dispatcher, sim: SimServer,
                                                      stream: bool) -> None:
    prompt = [QUESTION, ld.Image(IMAGE)]
    r = ask(d, prompt, TARGETS["openai"], stream)
    message = {"role": "user", "content": [
        {"type": "text", "text": QUESTION},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{B64}"}}]}
    assert last_body(sim, "openai")["messages"] == [message]
    from openai.types.chat import ChatCompletionUserMessageParam
    assert pydantic.TypeAdapter(ChatCompletionUserMessageParam).validate_python(message)
    assert SEEN in r.text, r.text


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_sends_a_base64_image_block_before_the_text(d: Dispatcher, sim: SimServer,
                                                             stream: bool) -> None:
    prompt = [QUESTION, ld.Image(IMAGE)]
    r = ask(d, prompt, TARGETS["anthropic"], stream)
    message = {"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": B64}},
        {"type": "text", "text": QUESTION}]}
    assert last_body(sim, "anthropic")["messages"] == [message]
    assert pydantic.TypeAdapter(anthropic.types.MessageParam).validate_python(message)
    assert SEEN in r.text, r.text


@pytest.mark.parametrize("stream", [False, True])
def test_gemini_sends_inline_data_before_the_text(d: Dispatcher, sim: SimServer,
                                                  stream: bool) -> None:
    prompt = [QUESTION, ld.Image(IMAGE)]
    r = ask(d, prompt, TARGETS["google"], stream)
    content = {"role": "user", "parts": [{"inlineData": {"mimeType": "image/png", "data": B64}},
                                         {"text": QUESTION}]}
    assert last_body(sim, "google")["contents"] == [content]
    read = genai_types.Content.model_validate(content)
    assert read.parts and read.parts[0].inline_data and read.parts[0].inline_data.data == IMAGE
    assert SEEN in r.text, r.text


def test_a_pdf_goes_as_each_vendors_document_part(d: Dispatcher, sim: SimServer,
                                                  tmp_path: Path) -> None:
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf("Quarterly numbers"))
    b64 = base64.b64encode(path.read_bytes()).decode()
    prompt = [{"role": "user", "content": ["Summarise the report", ld.File(path)]}]
    answers = {v: d.send(prompt, t).text for v, t in TARGETS.items()}
    assert last_body(sim, "openai")["messages"][0]["content"][1] == {
        "type": "file", "file": {"filename": "report.pdf",
                                 "file_data": f"data:application/pdf;base64,{b64}"}}
    assert last_body(sim, "anthropic")["messages"][0]["content"][0] == {
        "type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                       "data": b64}}
    assert last_body(sim, "google")["contents"][0]["parts"][0] == {
        "inlineData": {"mimeType": "application/pdf", "data": b64}}
    for text in answers.values():
        assert f"[attached PDF: PDF, {path.stat().st_size:,} bytes]" in text, text


def test_an_image_from_a_path_a_data_url_and_a_message_dict_is_the_same_part(
        tmp_path: Path) -> None:
    path = tmp_path / "red.jpg"  # named .jpg, but the bytes are a PNG: the bytes win
    path.write_bytes(IMAGE)
    a = ld.Image(path)
    b = ld.Image(f"data:image/png;base64,{B64}")
    c = ld.Image(IMAGE)
    assert a.media_type == b.media_type == c.media_type == "image/png"
    assert a.sha256 == b.sha256 == c.sha256 and a.size == len(IMAGE)
    req = ld.Request([{"role": "user", "content": [{"type": "text", "text": "Hi"}, c]}])
    assert req.messages[0].attachments == (c,) and req.messages[0].content == "Hi"
    assert B64 not in repr(req) and "data=" not in repr(c)


def test_what_is_not_an_image_is_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(RequestValidationError, match="no image at"):
        ld.Image(tmp_path / "missing.png")
    with pytest.raises(RequestValidationError, match=r"it is a PDF: use ld\.File"):
        ld.Image(pdf())
    with pytest.raises(RequestValidationError, match="only PDF files"):
        ld.File(IMAGE)
    with pytest.raises(RequestValidationError, match="part 1 of the prompt is a int"):
        ld.Request(["Describe", 42])


# -- refused before sending ----------------------------------------------------------------


def test_an_image_over_anthropics_5_mb_is_refused_before_sending(d: Dispatcher,
                                                                  sim: SimServer) -> None:
    big = ld.Image(png(2, 2) + b"\x00" * (5 * 1024 * 1024))
    with pytest.raises(RequestValidationError,
                       match=r"an image of 5\.0 MB is over anthropic's limit of 5\.0 MB per image"):
        d.send(["Describe", big], TARGETS["anthropic"])
    assert not sim.emulators["anthropic"].requests.chat()
    assert d.send(["Describe", big], TARGETS["google"]).text  # Gemini takes it


def test_openais_50_mb_per_request_and_geminis_image_types(d: Dispatcher, sim: SimServer) -> None:
    nineteen = ld.Image(png(2, 2) + b"\x00" * (19 * 1024 * 1024))
    with pytest.raises(RequestValidationError, match=r"weigh 57\.0 MB, over openai's limit of "
                                                     r"50\.0 MB per request"):
        d.send(["Compare", nineteen, nineteen, nineteen], TARGETS["openai"])
    gif = ld.Image(b"GIF89a\x02\x00\x02\x00\x00\x00\x00;")
    with pytest.raises(RequestValidationError, match="does not read image/gif images"):
        d.send(["Describe", gif], TARGETS["google"])
    assert not sim.emulators["openai"].requests.chat()
    assert not sim.emulators["google"].requests.chat()


def test_a_model_the_catalogue_says_reads_no_images_is_refused_before_sending(
        d: Dispatcher, sim: SimServer) -> None:
    catalogue.override("openai", "gpt-4o-mini", input_modalities=["text"])
    try:
        with pytest.raises(RequestValidationError, match="openai:gpt-4o-mini does not take images"):
            d.send(["Describe", ld.Image(IMAGE)], TARGETS["openai"])
    finally:
        catalogue.remove("openai", "gpt-4o-mini")
    assert not sim.emulators["openai"].requests.chat()


# -- the emulators, through the official SDKs -------------------------------------------------


@pytest.fixture
def text_only() -> Iterator[None]:
    """Each vendor's model made text-only in the catalogue, which the emulators read too."""
    models = [("openai", "gpt-4o-mini"), ("anthropic", "claude-haiku-4-5"),
              ("google", "gemini-2.5-flash")]
    for vendor, model in models:
        catalogue.override(vendor, model, input_modalities=["text"])
    try:
        yield
    finally:
        for vendor, model in models:
            catalogue.remove(vendor, model)


def test_openai_sdk_image_accepted_then_refused_as_openai_refuses(sim: SimServer) -> None:
    client = openai.OpenAI(api_key=CANARY_KEY, base_url=sim.base_url("openai"), max_retries=0)
    content: Any = [{"type": "text", "text": QUESTION},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{B64}",
                                                        "detail": "low"}}]
    r = client.chat.completions.create(model="gpt-4o-mini",
                                       messages=[{"role": "user", "content": content}])
    assert SEEN in (r.choices[0].message.content or "")
    bad: Any = [content[0], {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="gpt-4o-mini",
                                       messages=[{"role": "user", "content": bad}])
    assert exc.value.code == "invalid_image_format" and "unsupported image" in exc.value.message
    catalogue.override("openai", "gpt-4o-mini", input_modalities=["text"])
    try:
        with pytest.raises(openai.BadRequestError) as exc:
            client.chat.completions.create(model="gpt-4o-mini",
                                           messages=[{"role": "user", "content": content}])
    finally:
        catalogue.remove("openai", "gpt-4o-mini")
    assert "Invalid content type. image_url is only supported by certain models." in str(exc.value)
    body: Any = exc.value.body
    assert body["param"] == "messages.[0].content.[1].type"
    client.close()


def test_anthropic_sdk_image_accepted_then_refused(sim: SimServer) -> None:
    client = anthropic.Anthropic(api_key=CANARY_KEY, base_url=sim.base_url("anthropic"),
                                 max_retries=0)
    image: Any = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                              "data": B64}}
    r = client.messages.create(model="claude-haiku-4-5", max_tokens=200, messages=[
        {"role": "user", "content": [image, {"type": "text", "text": QUESTION}]}])
    assert r.content[0].type == "text" and "8×6 px" in r.content[0].text
    wrong: Any = {**image, "source": {**image["source"], "media_type": "image/jpeg"}}
    with pytest.raises(anthropic.BadRequestError,
                       match=r"messages\.0\.content\.0\.image\.source\.base64\.data: Image does not "
                             r"match the provided media type image/jpeg"):
        client.messages.create(model="claude-haiku-4-5", max_tokens=50,
                               messages=[{"role": "user", "content": [wrong]}])
    huge: Any = {**image, "source": {**image["source"], "data": base64.b64encode(
        png(2, 2) + b"\x00" * (6 * 1024 * 1024)).decode()}}
    with pytest.raises(anthropic.BadRequestError, match=r"image exceeds 5 MB maximum: \d+ bytes "
                                                        r"> 5242880 bytes"):
        client.messages.create(model="claude-haiku-4-5", max_tokens=50,
                               messages=[{"role": "user", "content": [huge]}])
    client.close()


def test_genai_sdk_image_accepted_in_its_url_safe_base64_then_refused(sim: SimServer) -> None:
    client = genai.Client(api_key=CANARY_KEY, http_options=genai_types.HttpOptions(
        base_url=sim.base_url("google"), api_version="v1beta"))
    part = genai_types.Part.from_bytes(data=IMAGE, mime_type="image/png")
    r = client.models.generate_content(model="gemini-2.5-flash", contents=[part, QUESTION])
    assert SEEN in (r.text or "")
    gif = genai_types.Part.from_bytes(data=b"GIF89a\x02\x00\x02\x00\x00\x00\x00;",
                                      mime_type="image/gif")
    with pytest.raises(genai_errors.ClientError, match="Unsupported MIME type: image/gif"):
        client.models.generate_content(model="gemini-2.5-flash", contents=[gif, QUESTION])
    catalogue.override("google", "gemini-2.5-flash", input_modalities=["text"])
    try:
        with pytest.raises(genai_errors.ClientError, match="Unsupported MIME type: image/png"):
            client.models.generate_content(model="gemini-2.5-flash", contents=[part, QUESTION])
    finally:
        catalogue.remove("google", "gemini-2.5-flash")
    client.close()


def test_anthropic_emulator_refuses_images_for_a_text_only_model(sim: SimServer,
                                                                 text_only: None) -> None:
    client = anthropic.Anthropic(api_key=CANARY_KEY, base_url=sim.base_url("anthropic"),
                                 max_retries=0)
    with pytest.raises(anthropic.BadRequestError, match="does not support image input"):
        client.messages.create(model="claude-haiku-4-5", max_tokens=50, messages=[
            {"role": "user", "content": [{"type": "image", "source": {
                "type": "base64", "media_type": "image/png", "data": B64}}]}])
    client.close()


# -- what is remembered ----------------------------------------------------------------------


def test_the_ledger_and_cache_keep_a_hash_and_a_size_never_the_bytes(sim: SimServer,
                                                                     tmp_path: Path) -> None:
    with Ledger(tmp_path / "project") as ledger, \
            Dispatcher(endpoints(sim), dotenv=False, ledger=ledger) as d:
        first = d.send([QUESTION, ld.Image(IMAGE)], TARGETS["anthropic"], temperature=0)
        again = d.send([QUESTION, ld.Image(IMAGE)], TARGETS["anthropic"], temperature=0)
        other = d.send([QUESTION, ld.Image(png(8, 6, (0, 0, 255)))], TARGETS["anthropic"],
                       temperature=0)
        records = ledger.records()
    assert again.cached and not first.cached and not other.cached  # the key holds the hash
    import hashlib
    digest = hashlib.sha256(IMAGE).hexdigest()
    assert records[0].params["attachments"] == [
        {"kind": "image", "media_type": "image/png", "bytes": len(IMAGE), "sha256": digest}]
    assert f"sha256:{digest[:16]}" in (records[0].prompt or "")
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files
    for p in files:
        data = p.read_bytes()
        for needle in (b"canary-pixels-5d41402a", B64.encode(), B64[:40].encode(),
                       base64.urlsafe_b64encode(IMAGE)[:40]):
            assert needle not in data, f"{p.name} holds the image's bytes"


def test_an_image_by_url_is_sent_as_a_url_to_each_vendor(d: Dispatcher, sim: SimServer) -> None:
    url = "https://example.com/charts/sales.png"
    for target in TARGETS.values():
        assert "[attached image at https://example.com/charts/sales.png]" in \
            d.send(["Describe", ld.Image(url, detail="low")], target).text
    assert last_body(sim, "openai")["messages"][0]["content"][1] == {
        "type": "image_url", "image_url": {"url": url, "detail": "low"}}
    assert last_body(sim, "anthropic")["messages"][0]["content"][0] == {
        "type": "image", "source": {"type": "url", "url": url}}
    assert last_body(sim, "google")["contents"][0]["parts"][0] == {
        "fileData": {"mimeType": "image/png", "fileUri": url}}


class _PILLike:
    """Stands in for a PIL image (PIL is not a dependency): what ld.Image reads of one is
    its module's name and `save(buffer, format=...)`."""

    __module__ = "PIL.Image"

    def save(self, buffer: Any, format: str) -> None:
        assert format == "PNG"
        buffer.write(IMAGE)


def test_a_pil_image_is_sent_as_png(d: Dispatcher, sim: SimServer) -> None:
    a = ld.Image(_PILLike())
    assert (a.media_type, a.data) == ("image/png", IMAGE)
    d.send(["Describe", _PILLike()], TARGETS["google"])  # in a prompt list as it is
    assert last_body(sim, "google")["contents"][0]["parts"][0]["inlineData"]["data"] == B64
