"""Reading a target: `vendor:model`, an alias, or a bare model name routed by its family."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .._config import VENDOR_ALIASES
from ..errors import ConfigurationError, MissingKeyError, UnknownTargetError
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
    """Reads targets. A group is one logical name for several deployments
    (`{"gpt4o": ["openai:gpt-4o", "azure:gpt-4o"]}`); its members may be any target,
    including aliases and other groups. A user alias beats a group of the same name, and a
    group beats a built-in alias."""

    def __init__(self, endpoints: Mapping[str, Endpoint], aliases: Mapping[str, str] | None = None,
                 default_target: str | None = None,
                 groups: Mapping[str, Sequence[str]] | None = None) -> None:
        self.endpoints = endpoints
        self.aliases: dict[str, str] = {**BUILTIN_ALIASES, **(aliases or {})}
        self.default_target = default_target
        self.groups: dict[str, tuple[str, ...]] = {}
        for name, members in (groups or {}).items():
            self.add_group(name, members)

    def add_group(self, name: str, members: Sequence[str]) -> None:
        if isinstance(members, str):
            members = (members,)
        if not name or ":" in name:
            raise ConfigurationError(f"a group name must be non-empty and have no colon, got {name!r}")
        if not members:
            raise ConfigurationError(f"group {name!r} has no members; list targets such as openai:gpt-4o")
        if self.aliases.get(name) == BUILTIN_ALIASES.get(name, object()):
            del self.aliases[name]  # the user's group wins over a built-in alias
        self.groups[name] = tuple(members)

    def _unknown(self, target: str, hint: str = "") -> UnknownTargetError:
        if self.groups:
            groups = f"groups: {', '.join(sorted(self.groups))}"
            hint = f"{hint} ({groups})" if hint else groups
        return UnknownTargetError(target, sorted(self.endpoints), sorted(self.aliases), hint,
                                  suggestion=self.suggest(target))

    def suggest(self, target: str) -> str | None:
        """The known target closest to a mistyped one (`gtp` -> `gpt`, `anthropc:claude-x`
        -> `anthropic:claude-x`), or None when nothing is close."""
        vendor, sep, model = target.partition(":")
        if sep:
            # A mistyped vendor: keep the model as written, correct the vendor.
            names = sorted({*self.endpoints, *_KNOWN_VENDOR_NAMES})
            near = difflib.get_close_matches(vendor.lower(), names, n=1, cutoff=0.6)
            if near and near[0] != vendor:
                return f"{near[0]}:{model}"
            known = [f"{ep.name}:{m}" for ep in self.endpoints.values()
                     for m in (*ep.models, ep.default_model) if m]
            near = difflib.get_close_matches(target, known, n=1, cutoff=0.8)
            return near[0] if near else None
        names = sorted({*self.aliases, *self.groups,
                        *(m for ep in self.endpoints.values()
                          for m in (*ep.models, ep.default_model) if m)})
        near = difflib.get_close_matches(target, names, n=1, cutoff=0.6)
        if not near:  # a case slip: GPT, Claude
            near = [n for n in names if n.lower() == target.lower()]
        return near[0] if near else None

    def _resolve_group(self, name: str, seen: tuple[str, ...]) -> list[Candidate]:
        out: list[Candidate] = []
        keys: set[str] = set()
        missing: list[MissingKeyError] = []
        for member in self.groups[name]:
            try:
                found = self.resolve(member, (*seen, name))
            except MissingKeyError as exc:
                # A deployment on a vendor with no key is left out; a typo is still an error.
                missing.append(exc)
                continue
            for c in found:
                if c.key not in keys:
                    keys.add(c.key)
                    out.append(Candidate(c.endpoint, c.model, f"group {name}"))
        if not out:
            if missing:
                raise missing[0]
            raise self._unknown(name, "the group resolved to no candidate")
        return out

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
        if target in self.groups:
            if target in _seen:
                raise self._unknown(target, f"groups loop: {' -> '.join((*_seen, target))}")
            return self._resolve_group(target, _seen)
        vendor, sep, model = target.partition(":")
        if sep and (vendor in self.endpoints or VENDOR_ALIASES.get(vendor) in self.endpoints
                    or vendor in _KNOWN_VENDOR_NAMES):
            name = vendor if vendor in self.endpoints else VENDOR_ALIASES.get(vendor, vendor)
            if name not in self.endpoints:
                from .._config import VENDORS

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
            # A provider of the model catalogue (groq, deepseek, ...): by another name it goes
            # by, or not configured: say which variable turns it on.
            from ..catalogue._providers import PROVIDER_ALIASES, missing_key_variables

            alias = PROVIDER_ALIASES.get(vendor)
            if alias is not None and alias in self.endpoints and model.strip():
                return [Candidate(self.endpoints[alias], model.strip(), "target")]
            needed = missing_key_variables(vendor)
            if needed is not None:
                raise MissingKeyError(alias or vendor, needed)
            raise self._unknown(target, f"no vendor called {vendor!r}")
        # A bare model name: by family, or any endpoint that lists it.
        for pattern, vendors in FAMILIES:
            if pattern.match(target):
                found = [Candidate(self.endpoints[v], target, "model family")
                         for v in vendors if v in self.endpoints]
                if found:
                    return found
                from .._config import VENDORS

                spec = VENDORS[vendors[0]]
                raise MissingKeyError(spec.name, spec.key_variables)
        listed = [Candidate(ep, target, "listed model") for ep in self.endpoints.values()
                  if target in ep.models]
        if listed:
            return listed
        raise self._unknown(target, "not a vendor:model, an alias or a model any vendor lists")


_KNOWN_VENDOR_NAMES = frozenset({"openai", "anthropic", "google", "gemini", "azure", "ollama"})
