"""The `Catalogue`: lookups over the kept data, the user's overrides on top, defaults below.

    lookup(vendor, model)  override (vendor, model) > override (vendor, "*") merged over
                           the models.dev entry > the defaults (warned about once)

The data is read on the first question, not at import, under a lock (one read however
many threads ask at once). Answers are memoised per (vendor, model); an override or a new
data file clears the memo.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._model import MODEL_FIELDS, ModelInfo, ProviderInfo
from ._source import (
    DATA_PROVIDER,
    bundled_path,
    data_date,
    find_model,
    model_info,
    package_version,
    provider_info,
    read_data,
)

log = logging.getLogger("llmdispatch_nb.catalogue")

# $LLMDISPATCH_CATALOGUE: a JSON file of your own entries, {"vendor:model": {field: value}}.
# $LLMDISPATCH_MODELS_DEV_JSON: a newer models.dev api.json to use instead of the bundled one.
OVERRIDES_VARIABLE = "LLMDISPATCH_CATALOGUE"
DATA_VARIABLE = "LLMDISPATCH_MODELS_DEV_JSON"


class Catalogue:
    """Models and providers from models.dev plus your overrides. Thread-safe."""

    def __init__(self, data_path: str | Path | None = None,
                 overrides: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self._lock = threading.RLock()
        self._data_path = Path(data_path) if data_path is not None else None
        self._data: dict[str, Any] | None = None
        self._overrides: dict[tuple[str, str], dict[str, Any]] = {}
        self._memo: dict[tuple[str, str], ModelInfo] = {}
        self._warned: set[tuple[str, str]] = set()
        self._config_loaded: set[str] = set()
        for key, changes in (overrides or {}).items():
            vendor, _, model = key.partition(":")
            self.add(vendor, model, **dict(changes))

    # -- the data ---------------------------------------------------------------------------

    def _raw(self) -> dict[str, Any]:
        data = self._data
        if data is not None:
            return data
        with self._lock:
            if self._data is None:
                path = self._data_path
                if path is None and os.environ.get(DATA_VARIABLE, "").strip():
                    path = Path(os.environ[DATA_VARIABLE].strip())
                try:
                    self._data = read_data(path if path is not None else bundled_path())
                except (OSError, ValueError) as exc:
                    log.warning("the model catalogue could not read %s (%s); every model "
                                "gets the conservative defaults until it can", path, exc)
                    self._data = {}
                self._load_config_file(os.environ.get(OVERRIDES_VARIABLE, ""))
            return self._data

    def use_data(self, path: str | Path) -> None:
        """Use a models.dev `api.json` (e.g. a fresh download of https://models.dev/api.json)
        instead of the data bundled with the `models-dev` package. Overrides stay."""
        data = read_data(Path(path))
        with self._lock:
            self._data_path = Path(path)
            self._data = data
            self._memo.clear()

    def info(self) -> dict[str, Any]:
        """Where the data comes from and how current it is."""
        data = self._raw()
        return {"source": "models.dev", "package": "models-dev", "version": package_version(),
                "path": str(self._data_path or bundled_path()), "data_date": data_date(data),
                "providers": len(data), "models": sum(len(p.get("models") or {}) for p in data.values()),
                "overrides": len(self._overrides)}

    # -- overrides --------------------------------------------------------------------------

    def add(self, vendor: str, model: str, **fields: Any) -> ModelInfo:
        """Add a model, or override fields of a known one (the rest stay as the data says).

        `model="*"` applies to every model of `vendor` that has no entry of its own in
        your overrides (a local server's models, say). Fields are those of `ModelInfo`
        (`context_window`, `max_output_tokens`, `reasoning`, `temperature`, `top_p`,
        `sampling_one_of`, `tools`, `structured_output`, `attachments`, `input_modalities`,
        `release_date`, ...); any other name is kept in `extra` for your own use."""
        if not vendor or not model:
            raise ValueError(f"name the vendor and the model, got {vendor!r} and {model!r}")
        for name in ("context_window", "max_output_tokens"):
            v = fields.get(name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
                raise ValueError(f"{name} must be a whole number of tokens > 0, got {v!r}")
        with self._lock:
            self._overrides.setdefault((vendor, model), {}).update(fields)
            self._memo.clear()
        return self.lookup(vendor, model, warn=False) if model != "*" else \
            ModelInfo(vendor, model).merged(fields)

    override = add

    def remove(self, vendor: str, model: str) -> None:
        """Forget your override of `vendor:model` (the data's entry, if any, is back)."""
        with self._lock:
            self._overrides.pop((vendor, model), None)
            self._memo.clear()

    def load_overrides(self, path: str | Path) -> int:
        """Read a JSON file of entries, `{"vendor:model": {"context_window": 32768, ...}}`;
        returns how many. $LLMDISPATCH_CATALOGUE names one to read on first use."""
        entries = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(entries, dict):
            raise ValueError(f"{path}: expected an object of \"vendor:model\" -> fields")
        for key, changes in entries.items():
            vendor, sep, model = str(key).partition(":")
            if not sep or not isinstance(changes, dict):
                raise ValueError(f"{path}: entry {key!r} must be \"vendor:model\": {{fields}}")
            self.add(vendor, model, **changes)
        return len(entries)

    def configure(self, env: Mapping[str, str]) -> None:
        """Read the override file named in `env` (the dispatcher's environment and .env)."""
        self._load_config_file(env.get(OVERRIDES_VARIABLE, ""))

    def _load_config_file(self, value: str) -> None:
        path = value.strip()
        if not path or path in self._config_loaded:
            return
        self._config_loaded.add(path)
        try:
            self.load_overrides(path)
        except (OSError, ValueError) as exc:
            log.warning("%s=%s could not be read (%s); its entries are not used",
                        OVERRIDES_VARIABLE, path, exc)

    # -- lookups ----------------------------------------------------------------------------

    def lookup(self, vendor: str, model: str, *, warn: bool = True) -> ModelInfo:
        """What the catalogue knows of `vendor:model`. An unknown model gets the
        conservative defaults (`known` is False) and one logged warning per model."""
        memo_key = (vendor, model)
        hit = self._memo.get(memo_key)
        if hit is None:
            hit = self._build(vendor, model)
            with self._lock:
                self._memo[memo_key] = hit
        if not hit.known and warn and memo_key not in self._warned:
            self._warned.add(memo_key)
            date = data_date(self._raw()) or "none"
            log.warning("%s:%s is not in the model catalogue (models.dev data of %s); assuming a "
                        "context window of %d tokens, an output cap of %d, no reasoning, no tools. "
                        "Describe it with llmdispatch_nb.catalogue.add(%r, %r, ...)", vendor, model,
                        date, hit.context_window, hit.max_output_tokens, vendor, model)
        return hit

    def _build(self, vendor: str, model: str) -> ModelInfo:
        data = self._raw()
        provider = DATA_PROVIDER.get(vendor, vendor)
        raw = find_model(data, provider, model)
        info = model_info(vendor, model, raw) if raw is not None else \
            ModelInfo(vendor, model, name=model, source="default")
        with self._lock:
            mine = self._overrides.get((vendor, model))
            wide = self._overrides.get((vendor, "*"))
        if wide is not None and mine is None and not info.known:
            info = info.merged(wide)
        if mine is not None:
            info = info.merged(mine)
        return info

    def knows(self, vendor: str, model: str) -> bool:
        return self.lookup(vendor, model, warn=False).known

    def models(self, vendor: str) -> list[ModelInfo]:
        """Every model the catalogue lists for `vendor` (yours included), newest first."""
        data = self._raw()
        provider = DATA_PROVIDER.get(vendor, vendor)
        names = list((data.get(provider) or {}).get("models") or {})
        with self._lock:
            names += [m for (v, m) in self._overrides if v == vendor and m != "*" and m not in names]
        infos = [self.lookup(vendor, m, warn=False) for m in names]
        return sorted(infos, key=lambda i: (i.release_date or "", i.model), reverse=True)

    def vendors(self) -> list[str]:
        """Provider ids the data knows, plus vendors you added models to."""
        with self._lock:
            mine = {v for v, _ in self._overrides}
        return sorted(set(self._raw()) | mine)

    def provider(self, vendor: str) -> ProviderInfo | None:
        raw = self._raw().get(DATA_PROVIDER.get(vendor, vendor))
        return provider_info(DATA_PROVIDER.get(vendor, vendor), raw) if isinstance(raw, dict) else None

    def providers(self) -> list[ProviderInfo]:
        return [provider_info(pid, raw) for pid, raw in sorted(self._raw().items())
                if isinstance(raw, dict)]


__all__ = ["DATA_VARIABLE", "MODEL_FIELDS", "OVERRIDES_VARIABLE", "Catalogue"]
