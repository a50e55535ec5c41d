"""What a request needs of a model (tools, images, PDF files) and whether a candidate's
model has it, by the model catalogue: the router skips a candidate that lacks it, with the
reason, rather than let its adapter refuse the request before sending.

Only hard requirements count, those every adapter refuses before sending: tools
(`vendors._structured.check_tools`) and images or PDFs (`_attachments.check`), each for a
model the catalogue knows (an unknown model, a local one say, is sent them: its server
decides). A schema is not one: where a model fills none natively each adapter has a
fallback (Anthropic a forced tool, OpenAI, compatible servers and Gemini JSON mode with the
schema in an instruction), so no candidate is skipped for it.
"""

from __future__ import annotations

from collections.abc import Iterable

from .._types import Request
from ..catalogue import ModelInfo, lookup, models
from ..errors import ConfigurationError, RequestValidationError
from ..vendors._structured import check_tools
from ._groups import catalogue_vendor, pricing_model
from ._targets import Candidate

# How many models that have a capability an error names, per vendor.
_NAMED = 4


def catalogue_names(candidate: Candidate) -> tuple[str, str]:
    """The vendor and model the candidate's adapter looks up in the catalogue (the OpenAI
    family by its endpoint's label, Azure by the deployment's model)."""
    ep = candidate.endpoint
    try:
        from ..vendors import adapter_for

        adapter = adapter_for(ep.kind)
    except (ConfigurationError, ImportError):
        return catalogue_vendor(candidate), pricing_model(candidate)
    vendor_of = getattr(adapter, "catalogue_vendor", None)
    model_of = getattr(adapter, "catalogue_model", None)
    if vendor_of is not None and model_of is not None:
        return str(vendor_of(ep)), str(model_of(candidate.model, ep))
    return catalogue_vendor(candidate), pricing_model(candidate)


def _has(info: ModelInfo, capability: str) -> bool:
    if capability == "tools":
        return info.tools
    return ("image" if capability == "images" else "pdf") in (info.input_modalities or ())


def needs(request: Request) -> list[str]:
    """The capabilities `request` needs a model to have, in the words errors use."""
    out = ["tools"] if request.tools else []
    kinds = {a.kind for a in request.attachments}
    if "image" in kinds:
        out.append("images")
    if kinds - {"image"}:
        out.append("PDF files")
    return out


def missing(request: Request, candidate: Candidate) -> tuple[str, str] | None:
    """(capability, why) for the first capability `request` needs that the catalogue says
    the candidate's model lacks; None when it has them all (or is not in the catalogue)."""
    wanted = needs(request)
    if not wanted:
        return None
    vendor, model = catalogue_names(candidate)
    if "tools" in wanted:
        try:  # the adapter's own check, so the router and the adapter agree
            check_tools(request, vendor, model)
        except RequestValidationError as exc:
            return "tools", str(exc).split(";")[0]
    info = lookup(vendor, model, warn=False)
    if not info.known:
        return None
    for capability in wanted:
        if capability != "tools" and not _has(info, capability):
            inputs = ", ".join(info.input_modalities or ()) or "text"
            return capability, (f"{vendor}:{model} does not take {capability} (the model "
                                f"catalogue gives its inputs as {inputs})")
    return None


def models_with(capability: str, vendors: Iterable[str]) -> list[str]:
    """A few current models of `vendors` that have `capability`, newest first."""
    out: list[str] = []
    for vendor in dict.fromkeys(vendors):
        try:
            found = [i for i in models(vendor) if _has(i, capability) and i.status != "deprecated"]
        except Exception:  # the catalogue's data unreadable: the error goes without a list
            continue
        out += [i.key for i in found[:_NAMED]]
    return out
