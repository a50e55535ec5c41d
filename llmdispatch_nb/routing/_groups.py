"""What the router knows about a candidate and a request before sending: the model's
context window, the request's size (a cheap estimate for routing, an upper bound for the
budget), what the vendor can bill for its answer, and the user's routing rules.

Context windows come from the model catalogue (models.dev, with your overrides), then from
genai-prices' model data, then from the emulator's own figure for a local model, then from
nowhere: an unknown window is taken to fit, and the vendor's own context-length error decides.
"""

from __future__ import annotations

import fnmatch
import operator
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._attachment_tokens import attachments_bound, typical_tokens
from .._types import Request, estimate_tokens
from ..errors import ConfigurationError
from ._targets import Candidate

DEFAULT_MAX_TOKENS = 1024  # assumed answer length when the request sets no max_tokens


def pricing_model(candidate: Candidate) -> str:
    """The model name a price list knows (Azure maps a deployment to its model)."""
    ep = candidate.endpoint
    try:
        from ..vendors import adapter_for

        return adapter_for(ep.kind).pricing_model(candidate.model, ep)
    except (ConfigurationError, ImportError):
        return ep.deployments.get(candidate.model, candidate.model)


class ContextWindows:
    """Context window (tokens, prompt and answer together) per candidate, or None."""

    def __init__(self, overrides: Mapping[str, int] | None = None) -> None:
        # Keys are "vendor:model" or a bare model name; the user's figure wins.
        self.overrides = dict(overrides or {})
        self._memo: dict[str, int | None] = {}
        self._lock = threading.Lock()

    def __call__(self, candidate: Candidate) -> int | None:
        key = candidate.key
        if key in self.overrides:
            return self.overrides[key]
        if candidate.model in self.overrides:
            return self.overrides[candidate.model]
        with self._lock:
            if key in self._memo:
                return self._memo[key]
        window = self._lookup(candidate)
        with self._lock:
            self._memo[key] = window
        return window

    def _lookup(self, candidate: Candidate) -> int | None:
        from ..catalogue import lookup
        from ..pricing import PROVIDERS

        ep = candidate.endpoint
        model = pricing_model(candidate)
        entry = lookup(catalogue_vendor(candidate), model, warn=ep.priced)
        if entry.known:
            return entry.context_window
        provider = PROVIDERS.get(ep.kind) or PROVIDERS.get(ep.name)
        if provider is not None:
            try:
                from genai_prices import data_snapshot

                _, info = data_snapshot.get_snapshot().find_provider_model(model, None, provider, None)
                if info.context_window:
                    return int(info.context_window)
            except LookupError:
                pass
            except Exception:  # a price-table problem must not stop routing
                pass
        from ..sim._core import PROFILES

        sim_vendor = {"gemini": "google"}.get(ep.kind, ep.kind)
        for vendor in (ep.name, sim_vendor):
            prof = PROFILES.get(vendor, {}).get(candidate.model) or PROFILES.get(vendor, {}).get(model)
            if prof is not None and prof.window is not None:
                return prof.window
        return None


def catalogue_vendor(candidate: Candidate) -> str:
    """The vendor name the catalogue files this candidate's model under (Azure: OpenAI's)."""
    ep = candidate.endpoint
    return "azure" if ep.kind == "azure" else ep.name


# -- what a request may cost: the budget's worst case ------------------------------------

# Tokens a request costs beyond its text: role markers and framing, per message and once.
# OpenAI documents 3-4 per message plus 3 per reply; Anthropic and Gemini add similar.
_FRAMING_PER_MESSAGE = 8
_FRAMING_PER_REQUEST = 16


def prompt_token_bound(request: Request, candidate: Candidate | None = None) -> int:
    """An upper bound of the prompt's tokens under any tokenizer the vendors use, images
    and PDFs included by the candidate's vendor rules (none given: the most of them all).

    Every token of a byte-level BPE (OpenAI, Anthropic, Llama, Qwen) or a SentencePiece
    vocabulary with byte fallback (Gemini) covers at least one UTF-8 byte, so the byte count
    bounds the token count for any text: Chinese, emoji and long digit strings included,
    where four characters a token undercounts threefold. English costs about four bytes a
    token, so this overstates it about fourfold; only the budget's reservation uses it.
    An attachment is billed by pixels and pages, not by its one line in the text: its
    bound is `_attachment_tokens.attachment_bound` (the vendor's rules, rounded up)."""
    text = request.prompt_text
    messages = len(request.messages) + (1 if request.system else 0)
    bound = (len(text.encode("utf-8", "surrogatepass")) + _FRAMING_PER_MESSAGE * messages
             + _FRAMING_PER_REQUEST)
    attached = request.attachments
    if attached:
        kind, model = (None, "") if candidate is None else \
            (candidate.endpoint.kind, pricing_model(candidate))
        bound += attachments_bound(attached, kind, model)
    return bound


def output_cap_sent(request: Request, candidate: Candidate) -> int | None:
    """The answer cap the adapter actually puts in the request body (Anthropic's default
    when none is asked, a Gemini cap raised for thinking, ...), or None when none is sent.

    Asked of the adapter (`Adapter.output_cap`: the same parameter rules its body uses, so
    whatever an adapter adds or renames is what is counted, without building the body on
    every attempt); on any trouble, the request's own max_tokens (the real attempt raises
    its own error)."""
    from ..vendors import adapter_for

    ep = candidate.endpoint
    try:
        return adapter_for(ep.kind).output_cap(request, candidate.model, ep)
    except Exception:  # only an estimate: building the request will say what is wrong
        return request.max_tokens


def billable_output_tokens(request: Request, candidate: Candidate) -> tuple[int, bool]:
    """The most answer tokens the vendor can bill for this request, and whether that is a
    cap sent with it (True) or the model's own output cap because none is sent (False).

    Reasoning and thinking tokens are billed as output and counted inside the cap sent:
    OpenAI's max_completion_tokens, Anthropic's max_tokens (thinking.budget_tokens must be
    below it) and, as Gemini 2.5+ behaves, maxOutputTokens. With no cap sent, the model's
    output cap from the catalogue bounds the answer (an unknown model: the catalogue's
    stated default, DEFAULT_MAX_OUTPUT_TOKENS)."""
    from ..catalogue import lookup

    sent = output_cap_sent(request, candidate)
    if sent is not None:
        return sent, True
    info = lookup(catalogue_vendor(candidate), pricing_model(candidate),
                  warn=candidate.endpoint.priced)
    return info.max_output_tokens, False


def estimated_input_tokens(request: Request) -> int:
    """A cheap estimate for routing: the text at four characters a token, and a typical
    figure for each image and PDF (`_attachment_tokens.typical_tokens`)."""
    tokens = estimate_tokens(request.prompt_text)
    attached = request.attachments
    return tokens + typical_tokens(attached) if attached else tokens


# -- rules --------------------------------------------------------------------------------

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge, "<=": operator.le, "!=": operator.ne, "==": operator.eq,
    ">": operator.gt, "<": operator.lt,
}
_CONDITIONS = ("model", "tokens", "temperature", "max_tokens", "user", "tags", "metadata")


def _number_test(spec: Any, what: str) -> Callable[[float | None], bool]:
    if callable(spec):
        return lambda v: v is not None and bool(spec(v))
    if isinstance(spec, int | float) and not isinstance(spec, bool):
        return lambda v: v is not None and v == spec
    if isinstance(spec, str):
        text = spec.replace(" ", "")
        for sym, op in _OPS.items():
            if text.startswith(sym):
                try:
                    bound = float(text[len(sym):])
                except ValueError:
                    break
                return lambda v: v is not None and op(v, bound)
    raise ConfigurationError(
        f"rule condition {what}={spec!r} is not a number, a comparison such as '>12000' or "
        f"'<=0.2', or a function")


def _strings(spec: Any) -> tuple[str, ...]:
    return (spec,) if isinstance(spec, str) else tuple(spec)


@dataclass(frozen=True)
class Rule:
    """Send matching requests to `target`. The first rule that matches wins.

    `when` is a function of the request, or conditions that must all hold:
    `model` (glob(s) on the requested target or its model part, e.g. "gpt-4o*"),
    `tokens` (estimated prompt tokens), `temperature`, `max_tokens` (a number, a
    comparison such as ">12000" or "<=0.2", or a function; an unset parameter never
    matches), `user` (one of these), `tags` (has all of these), `metadata` (these
    key/values). `Rule(when={"tokens": ">100000"}, target="gemini")`.
    """

    target: str
    when: Mapping[str, Any] | Callable[[Request], bool] = field(default_factory=dict)
    name: str | None = None

    def __post_init__(self) -> None:
        if not callable(self.when):
            unknown = set(self.when) - set(_CONDITIONS)
            if unknown:
                raise ConfigurationError(
                    f"unknown rule condition(s) {sorted(unknown)}; use {', '.join(_CONDITIONS)} "
                    f"or a function of the request")
            for what in ("tokens", "temperature", "max_tokens"):
                if what in self.when:
                    _number_test(self.when[what], what)  # fail at setup, not per call

    def describe(self) -> str:
        if self.name:
            return self.name
        if callable(self.when):
            return f"{getattr(self.when, '__name__', 'function')} -> {self.target}"
        conds = ", ".join(f"{k} {v}" for k, v in self.when.items())
        return f"{conds or 'always'} -> {self.target}"

    def matches(self, request: Request, requested: str, tokens: int) -> bool:
        """`requested` is the target as asked (or the default); `tokens` the estimate."""
        if callable(self.when):
            return bool(self.when(request))
        w = self.when
        if "model" in w:
            model = requested.partition(":")[2] or requested
            if not any(fnmatch.fnmatchcase(requested, p) or fnmatch.fnmatchcase(model, p)
                       for p in _strings(w["model"])):
                return False
        if "tokens" in w and not _number_test(w["tokens"], "tokens")(tokens):
            return False
        if "temperature" in w and not _number_test(w["temperature"], "temperature")(request.temperature):
            return False
        if "max_tokens" in w and not _number_test(w["max_tokens"], "max_tokens")(request.max_tokens):
            return False
        if "user" in w and request.user not in _strings(w["user"]):
            return False
        if "tags" in w and not set(_strings(w["tags"])) <= set(request.tags):
            return False
        if "metadata" in w:
            meta: Mapping[str, Any] = w["metadata"]
            if any(request.metadata.get(k) != v for k, v in meta.items()):
                return False
        return True


def first_rule(rules: Sequence[Rule], request: Request, requested: str,
               tokens: int) -> tuple[int, Rule] | None:
    for i, rule in enumerate(rules, 1):
        if rule.matches(request, requested, tokens):
            return i, rule
    return None
