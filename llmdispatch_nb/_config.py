"""Where vendors come from: explicit `Endpoint`s, the environment, a `.env` file, or the
emulators (demo mode). Keys become `Secret`s the moment they are read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigurationError
from .vendors._base import Endpoint, Secret


@dataclass(frozen=True)
class VendorSpec:
    name: str  # what users type: openai, anthropic, google, azure, ollama
    kind: str  # adapter kind
    key_variables: tuple[str, ...]
    base_url: str
    base_url_variables: tuple[str, ...] = ()
    default_model: str | None = None
    sim: str | None = None  # the emulator that stands in for it in demo mode


VENDORS: dict[str, VendorSpec] = {
    "openai": VendorSpec("openai", "openai", ("OPENAI_API_KEY",), "https://api.openai.com/v1",
                         ("OPENAI_BASE_URL",), "gpt-4o-mini", "openai"),
    "anthropic": VendorSpec("anthropic", "anthropic", ("ANTHROPIC_API_KEY",), "https://api.anthropic.com",
                            ("ANTHROPIC_BASE_URL",), "claude-haiku-4-5", "anthropic"),
    "google": VendorSpec("google", "gemini", ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
                         "https://generativelanguage.googleapis.com",
                         ("GOOGLE_GEMINI_BASE_URL",), "gemini-2.5-flash", "google"),
    "azure": VendorSpec("azure", "azure", ("AZURE_OPENAI_API_KEY",), "",
                        ("AZURE_OPENAI_ENDPOINT",), None, "azure"),
    "ollama": VendorSpec("ollama", "compat", ("OLLAMA_API_KEY",), "http://localhost:11434/v1",
                         ("OLLAMA_BASE_URL", "OLLAMA_HOST"), None, None),
}
# Other names people type for the same vendor.
VENDOR_ALIASES = {"gemini": "google", "azure_openai": "azure", "azure-openai": "azure"}

AZURE_DEFAULT_API_VERSION = "2024-10-21"


def read_dotenv(path: Path) -> dict[str, str]:
    """A small `.env` reader: KEY=VALUE, optional `export`, quotes, # comments."""
    out: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return out
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.removeprefix("export ").strip()
        value = value.strip()
        if value[:1] in ("'", '"') and value[-1:] == value[:1] and len(value) >= 2:
            value = value[1:-1]
        else:
            value = value.split(" #", 1)[0].strip()
        if key:
            out[key] = value
    return out


def environment(dotenv: bool | str | Path = True, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The process environment, with a `.env` file's values under it (the environment wins)."""
    base = dict(os.environ if env is None else env)
    if dotenv:
        path = Path(dotenv) if isinstance(dotenv, str | Path) else Path.cwd() / ".env"
        merged = read_dotenv(path)
        merged.update(base)
        return merged
    return base


def first(env: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    for n in names:
        v = env.get(n, "").strip()
        if v:
            return v
    return None


def parse_deployments(text: str | None) -> dict[str, str]:
    """`AZURE_OPENAI_DEPLOYMENTS="prod-4o=gpt-4o, cheap=gpt-4o-mini"` -> {deployment: model}."""
    out: dict[str, str] = {}
    for part in (text or "").split(","):
        dep, sep, model = part.strip().partition("=")
        if dep.strip():
            out[dep.strip()] = (model if sep else dep).strip()
    return out


def endpoints_from_env(env: Mapping[str, str]) -> list[Endpoint]:
    """Every vendor the environment configures, with keys wrapped as secrets."""
    found: list[Endpoint] = []
    for spec in VENDORS.values():
        key = first(env, spec.key_variables)
        base = first(env, spec.base_url_variables)
        if spec.name == "azure":
            token = env.get("AZURE_OPENAI_AD_TOKEN", "").strip()
            if not base or not (key or token):
                continue
            deployments = parse_deployments(env.get("AZURE_OPENAI_DEPLOYMENTS"))
            found.append(Endpoint(
                "azure", "azure", base.rstrip("/"), key=Secret(key or token),
                auth="api-key" if key else "bearer",
                api_version=env.get("AZURE_OPENAI_API_VERSION") or env.get("OPENAI_API_VERSION")
                or AZURE_DEFAULT_API_VERSION,
                route="v1" if base.rstrip("/").endswith("/openai/v1") else "deployments",
                deployments=deployments, models=tuple(deployments),
                default_model=next(iter(deployments), None)))
        elif spec.kind == "compat":
            if not base:
                continue  # a local server is only used when asked for
            if not base.startswith("http"):
                base = f"http://{base}"
            if not base.rstrip("/").endswith("/v1"):
                base = base.rstrip("/") + "/v1"
            found.append(Endpoint(spec.name, "compat", base, key=Secret(key) if key else None,
                                  priced=False, default_model=env.get("OLLAMA_MODEL") or None))
        elif key:
            found.append(Endpoint(spec.name, spec.kind, base or spec.base_url, key=Secret(key),
                                  default_model=spec.default_model))
    compat = env.get("LLMDISPATCH_COMPAT_BASE_URL", "").strip()
    if compat:
        ckey = env.get("LLMDISPATCH_COMPAT_API_KEY", "").strip()
        found.append(Endpoint(env.get("LLMDISPATCH_COMPAT_NAME", "local"), "compat", compat,
                              key=Secret(ckey) if ckey else None, priced=False,
                              default_model=env.get("LLMDISPATCH_COMPAT_MODEL") or None))
    return found


DEMO_KEY = "sim-demo-key"


def sim_time_scale(given: float | None, env: Mapping[str, str]) -> float:
    """The emulators' pace: `given`, else $LLMDISPATCH_SIM_TIME_SCALE, else 1 (the vendors'
    own latencies). 0 answers at once; 0.1 runs ten times faster than the vendors."""
    text = env.get("LLMDISPATCH_SIM_TIME_SCALE", "").strip()
    if given is None and not text:
        return 1.0
    try:
        scale = float(text if given is None else given)
    except (TypeError, ValueError):
        scale = float("nan")
    if not 0 <= scale < float("inf") or isinstance(given, bool):
        where = "sim_time_scale" if given is not None else "LLMDISPATCH_SIM_TIME_SCALE"
        raise ConfigurationError(f"{where} must be a number >= 0 (1 = the vendors' pace, "
                                 f"0 = answer at once), got {given if given is not None else text!r}")
    return scale


def demo_endpoints(sim: Any) -> list[Endpoint]:
    """Endpoints pointing at running emulators (a `SimServer`), clearly marked simulated."""
    from .sim._core import PROFILES

    key = Secret(DEMO_KEY)
    out = []
    for name, spec in VENDORS.items():
        if spec.sim is None or spec.sim not in sim.emulators:
            continue
        models = tuple(PROFILES.get(spec.sim, {}))
        if name == "azure":
            out.append(Endpoint("azure", "azure", sim.base_url("azure"), key=key, auth="api-key",
                                api_version=AZURE_DEFAULT_API_VERSION, route="deployments",
                                deployments={m: m for m in models}, models=models,
                                default_model=models[0], simulated=True))
        else:
            out.append(Endpoint(name, spec.kind, sim.base_url(spec.sim), key=key, models=models,
                                default_model=spec.default_model, simulated=True))
    return out
