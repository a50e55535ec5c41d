"""Reading a target: `vendor:model`, an alias, or a bare model name routed by its family."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from .._config import VENDOR_ALIASES
from ..errors import UnknownTargetError
from ..vendors._base import Endpoint


@dataclass(frozen=True)
class Candidate:
    """One way to serve a request: this endpoint, this model."""

    endpoint: Endpoint
    model: str
    reason: str = "target"

    @property
    def vendor(self) -> str:
        return self.endpoint.name

    @property
    def key(self) -> str:
        return f"{self.endpoint.name}:{self.model}"


# Bare model names -> the vendors that serve that family, in preference order.
FAMILIES: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...] = (
    (re.compile(r"^(gpt-|o[134](-|$)|chatgpt-|text-embedding-)"), ("openai", "azure")),
    (re.compile(r"^claude-"), ("anthropic",)),
    (re.compile(r"^(gemini-|gemma-)"), ("google",)),
)

BUILTIN_ALIASES: dict[str, str] = {
    "gpt": "openai:gpt-4o-mini",
    "claude": "anthropic:claude-haiku-4-5",
    "gemini": "google:gemini-2.5-flash",
}


class TargetResolver:
    def __init__(self, endpoints: Mapping[str, Endpoint], aliases: Mapping[str, str] | None = None,
                 default_target: str | None = None) -> None:
        self.endpoints = endpoints
        self.aliases: dict[str, str] = {**BUILTIN_ALIASES, **(aliases or {})}
        self.default_target = default_target

    def _unknown(self, target: str, hint: str = "") -> UnknownTargetError:
        return UnknownTargetError(target, sorted(self.endpoints), sorted(self.aliases), hint)

    def default(self) -> str:
        if self.default_target:
            return self.default_target
        for ep in self.endpoints.values():
            if ep.default_model:
                return f"{ep.name}:{ep.default_model}"
        raise self._unknown("(none)", "no default target; give one, e.g. openai:gpt-4o-mini")

    def resolve(self, target: str | None, _seen: tuple[str, ...] = ()) -> list[Candidate]:
        target = (target or self.default()).strip()
        if not target:
            raise self._unknown(target, "the target is empty")
        if target in self.aliases:
            if target in _seen:
                raise self._unknown(target, f"aliases loop: {' -> '.join((*_seen, target))}")
            out = self.resolve(self.aliases[target], (*_seen, target))
            return [Candidate(c.endpoint, c.model, f"alias {target}") for c in out]
        vendor, sep, model = target.partition(":")
        if sep and (vendor in self.endpoints or VENDOR_ALIASES.get(vendor) in self.endpoints
                    or vendor in _KNOWN_VENDOR_NAMES):
            name = vendor if vendor in self.endpoints else VENDOR_ALIASES.get(vendor, vendor)
            if name not in self.endpoints:
                from .._config import VENDORS
                from ..errors import MissingKeyError

                spec = VENDORS.get(name)
                if spec is not None:
                    variables = spec.key_variables
                    if name == "azure":
                        variables = ("AZURE_OPENAI_API_KEY and AZURE_OPENAI_ENDPOINT",)
                    elif spec.kind == "compat":
                        variables = spec.base_url_variables
                    raise MissingKeyError(name, variables)
                raise self._unknown(target, f"vendor {vendor!r} is not configured")
            if not model.strip():
                raise self._unknown(target, "no model after the colon")
            return [Candidate(self.endpoints[name], model.strip(), "target")]
        if sep and vendor not in self.endpoints:
            raise self._unknown(target, f"no vendor called {vendor!r}")
        # A bare model name: by family, or any endpoint that lists it.
        for pattern, vendors in FAMILIES:
            if pattern.match(target):
                found = [Candidate(self.endpoints[v], target, "model family")
                         for v in vendors if v in self.endpoints]
                if found:
                    return found
                from .._config import VENDORS
                from ..errors import MissingKeyError

                spec = VENDORS[vendors[0]]
                raise MissingKeyError(spec.name, spec.key_variables)
        listed = [Candidate(ep, target, "listed model") for ep in self.endpoints.values()
                  if target in ep.models]
        if listed:
            return listed
        raise self._unknown(target, "not a vendor:model, an alias or a model any vendor lists")


_KNOWN_VENDOR_NAMES = frozenset({"openai", "anthropic", "google", "gemini", "azure", "ollama"})
