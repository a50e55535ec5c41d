"""The vendor registry: adapter kind -> adapter class.

Built-in adapters are listed explicitly; third-party ones come from the
`llmdispatch_nb.vendors` entry-point group. A plugin that fails to import is logged and
skipped, so one broken package never stops the others.
"""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points

from ._base import Adapter, Endpoint, Secret, StreamParser
from ._rules import ParameterWarning

__all__ = ["Adapter", "Endpoint", "ParameterWarning", "Secret", "StreamParser", "adapter_for",
           "known_kinds", "register"]

log = logging.getLogger("llmdispatch_nb")

_BUILTIN: dict[str, str] = {
    "openai": "llmdispatch_nb.vendors.openai:OpenAIAdapter",
    "compat": "llmdispatch_nb.vendors.compat:CompatAdapter",
    "azure": "llmdispatch_nb.vendors.azure:AzureAdapter",
    "anthropic": "llmdispatch_nb.vendors.anthropic:AnthropicAdapter",
    "gemini": "llmdispatch_nb.vendors.gemini:GeminiAdapter",
}
_loaded: dict[str, Adapter] = {}
_plugins_scanned = False


def register(kind: str, adapter: Adapter | type[Adapter]) -> None:
    """Register an adapter (instance or class) under `kind`, replacing any earlier one."""
    _loaded[kind] = adapter() if isinstance(adapter, type) else adapter


def _scan_plugins() -> None:
    global _plugins_scanned
    _plugins_scanned = True
    for ep in entry_points(group="llmdispatch_nb.vendors"):
        try:
            register(ep.name, ep.load())
        except Exception as exc:  # a broken plugin must not stop the others
            log.warning("vendor plugin %r failed to load and is skipped: %s", ep.name, exc)


def adapter_for(kind: str) -> Adapter:
    if kind in _loaded:
        return _loaded[kind]
    if kind in _BUILTIN:
        module, _, cls = _BUILTIN[kind].partition(":")
        register(kind, getattr(importlib.import_module(module), cls))
        return _loaded[kind]
    if not _plugins_scanned:
        _scan_plugins()
        if kind in _loaded:
            return _loaded[kind]
    from ..errors import ConfigurationError

    raise ConfigurationError(
        f"no adapter for vendor kind {kind!r}; known kinds: {', '.join(known_kinds())}"
    )


def known_kinds() -> list[str]:
    return sorted(set(_BUILTIN) | set(_loaded))
