"""Where vendors come from: explicit `Endpoint`s, the environment, a `.env` file, or the
emulators (demo mode). Keys become `Secret`s the moment they are read.

Everything read here is checked before anything is sent, and a bad setting is one
`ConfigurationError` naming it (never the key): a key must be printable ASCII (a
zero-width or no-break space from a paste is caught); a base URL must be http or https
with a readable host and port, and plain http carries a key only to this machine or a
private network, unless LLMDISPATCH_ALLOW_INSECURE_HTTP=1. The `.env` is looked for from
the working directory up to the project root (a `.git` or `pyproject.toml` folder) or
the home folder, so a notebook in `notebooks/` reads the repository's.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

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


def find_dotenv(start: Path | None = None) -> Path | None:
    """The `.env` a kernel started in `start` (the working directory) means: the first one
    found from there upward, stopping at the project root (a folder holding `.git` or
    `pyproject.toml`) or the home folder. A notebook in `notebooks/` thus reads the
    repository's `.env`, and nothing above the project or the home folder is ever read."""
    here = (start or Path.cwd()).resolve()
    home = Path.home().resolve()
    for folder in (here, *here.parents):
        candidate = folder / ".env"
        if candidate.is_file():
            return candidate
        if folder == home or (folder / ".git").exists() or (folder / "pyproject.toml").exists():
            return None
    return None


def read_dotenv(path: Path) -> dict[str, str]:
    """A small `.env` reader: KEY=VALUE, optional `export`, quotes, # comments.

    UTF-8, with or without a byte-order mark (Windows editors write one; read as plain
    UTF-8 it would glue itself to the first key's name and lose that key). A file in
    another encoding is one `ConfigurationError` naming the file and line, never a
    `UnicodeDecodeError`, whose `.object` would carry the whole file, keys and all."""
    try:
        raw = path.read_bytes()
    except OSError:
        return {}
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad = exc.start
    else:
        bad = -1
    if bad >= 0:  # raised out here, so no __context__ keeps the decode error (and the file)
        line_no = raw.count(b"\n", 0, bad) + 1
        start = raw.rfind(b"\n", 0, bad) + 1
        name = raw[start:bad].partition(b"=")
        where = (f" (in the value of {name[0].decode('ascii', 'replace').strip()})"
                 if name[1] and name[0].strip().isascii() else "")
        raise ConfigurationError(
            f"{path} is not UTF-8: line {line_no} has the byte 0x{raw[bad]:02x}{where}. "
            f"Save the file as UTF-8 (a key is plain ASCII; retype or re-copy it)")
    out: dict[str, str] = {}
    # Only CR/LF end a line: str.splitlines would also cut at U+2028, U+0085 and a few
    # control characters, silently truncating a key that a bad paste put one into.
    for number, text_line in enumerate(re.split(r"\r\n|\r|\n", text), 1):
        line = text_line.strip().lstrip("\ufeff")  # files joined together keep their marks
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.removeprefix("export ").strip()
        odd = [ch for ch in key if unicodedata.category(ch) in ("Cc", "Cf", "Zs") and ch != " "]
        if odd:
            # An invisible character in a name makes it another name: the key would be
            # ignored without a word, and the dispatcher fall back to demo mode. (The name
            # is not shown: on a garbled line it may be part of a key.)
            raise ConfigurationError(
                f"{path}, line {number}: the variable's name contains {_char_name(odd[0])}; "
                f"retype the name")
        value = value.strip()
        if value[:1] in ("'", '"') and value[-1:] == value[:1] and len(value) >= 2:
            value = value[1:-1]
        else:
            value = value.split(" #", 1)[0].strip()
        if key:
            out[key] = value
    return out


class Environment(dict[str, str]):
    """The settings a dispatcher reads, and which `.env` file (if any) they came from."""

    dotenv_path: Path | None = None


def environment(dotenv: bool | str | Path = True, env: Mapping[str, str] | None = None) -> Environment:
    """The process environment, with a `.env` file's values under it (the environment wins).

    `dotenv=True` looks for the file upward from the working directory (`find_dotenv`);
    a path reads that file; False reads none."""
    out = Environment(os.environ if env is None else env)
    if dotenv:
        path = Path(dotenv) if isinstance(dotenv, str | Path) else find_dotenv()
        if path is not None:
            merged = read_dotenv(path)
            if merged or path.is_file():
                out.dotenv_path = path
            out.update({k: v for k, v in merged.items() if k not in out})
    return out


def first(env: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    return first_named(env, names)[1]


def first_named(env: Mapping[str, str], names: tuple[str, ...]) -> tuple[str, str | None]:
    """The first of `names` set to something, and its value (errors name the variable)."""
    for n in names:
        v = env.get(n, "").strip()
        if v:
            return n, v
    return (names[0] if names else ""), None


# -- keys and base URLs, checked before anything is sent ---------------------------------

# Plain http to a host on the public internet carries a key only when this is set to 1:
# anyone on the path reads the key from an unencrypted request.
ALLOW_INSECURE_HTTP = "LLMDISPATCH_ALLOW_INSECURE_HTTP"
# Names that never resolve on the public internet (RFC 6761/6762/8375, common LAN use).
_PRIVATE_SUFFIXES = (".localhost", ".local", ".internal", ".lan", ".home.arpa")


def allows_insecure_http(env: Mapping[str, str]) -> bool:
    return env.get(ALLOW_INSECURE_HTTP, "").strip().lower() in ("1", "true", "yes")


def _char_name(ch: str) -> str:
    name = unicodedata.name(ch, "")
    return f"{name.lower()} (U+{ord(ch):04X})" if name else f"the control character U+{ord(ch):04X}"


def check_key(value: str, where: str) -> str:
    """`value` if it can travel in an HTTP header; else one `ConfigurationError` naming
    `where` and the offending character (never the key: an encoding error's `.object`
    would hold the whole key). Keys are printable ASCII; a zero-width space, a no-break
    space or a control character came with a copy and paste."""
    if not isinstance(value, str):
        raise ConfigurationError(f"{where} must be a string (the key), got {type(value).__name__}")
    for i, ch in enumerate(value):
        if not "!" <= ch <= "~":
            raise ConfigurationError(
                f"{where} contains {_char_name(ch)} at character {i + 1} of {len(value)}; "
                f"API keys are plain ASCII without spaces. Copy the key again from the "
                f"vendor's console (or retype that character)")
    return value


def is_private_host(host: str) -> bool:
    """Loopback, a private or link-local address, or a name that stays on this machine or
    network (`localhost`, `*.local`, a single-label name such as a container's). Names
    are judged as written: nothing is looked up."""
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost" or host.endswith(_PRIVATE_SUFFIXES):
        return True
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return "." not in host
    return ip.is_private or ip.is_loopback or ip.is_link_local


def _shown(url: str) -> str:
    """A URL as an error may show it: no user:password@, no query (`?key=`), short."""
    url = re.sub(r"//[^/@]*@", "//***@", url.split("?", 1)[0].split("#", 1)[0])
    return repr(url[:120] + ("…" if len(url) > 120 else ""))


def check_base_url(url: str, where: str, *, sends_key: bool, allow_http: bool) -> str:
    """`url` if it may be used as a base URL; else one `ConfigurationError` naming `where`.

    Only http and https: a mistyped scheme (`htps://`, `ws://`, `file://`) must not fall
    back to plain HTTP with the key in its headers. Plain http carries a key only to a
    private host, or anywhere with LLMDISPATCH_ALLOW_INSECURE_HTTP=1."""
    text = url.strip() if isinstance(url, str) else ""
    if not text:
        raise ConfigurationError(f"{where} is empty; give a URL such as https://host/v1, or unset it")
    reason = ""
    try:
        parts = urlsplit(text)
        port = parts.port
        httpx.URL(text)
    except (ValueError, httpx.InvalidURL) as exc:
        reason = str(exc).split("\n")[0][:80] or type(exc).__name__
    if reason:  # raised out here, so no __context__ keeps the URL (it may hold a password)
        raise ConfigurationError(
            f"{where} is not a URL that can be read ({reason}): {_shown(text)}. Write it as "
            f"https://host[:port]/path, with the port a number from 1 to 65535")
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        near = difflib.get_close_matches(scheme, ["https", "http"], n=1, cutoff=0.6)
        hint = f" (did you mean {near[0]}://?)" if near and scheme else ""
        raise ConfigurationError(
            f"{where} must start with https:// (or http:// for a server on this machine or "
            f"your own network); {_shown(text)} has " +
            (f"the scheme {scheme!r}{hint}" if scheme else "no scheme") +
            ". Nothing was sent")
    if not parts.hostname:
        raise ConfigurationError(f"{where} has no host: {_shown(text)}. Write https://host/path")
    if any(ch.isspace() or not ch.isprintable() for ch in parts.hostname):
        raise ConfigurationError(f"{where} has a space or an invisible character in its host: "
                                 f"{_shown(text)}. Retype the host name")
    if port == 0:
        raise ConfigurationError(f"{where} has port 0: {_shown(text)}. Give a port from 1 to "
                                 f"65535, or none for the scheme's default")
    if scheme == "http" and sends_key and not allow_http and not is_private_host(parts.hostname):
        raise ConfigurationError(
            f"{where} is plain http to {parts.hostname}, a host outside this machine and your "
            f"network: the key would cross the internet unencrypted. Use https://, or set "
            f"{ALLOW_INSECURE_HTTP}=1 if you accept that")
    return text


def check_endpoint(endpoint: Endpoint, *, allow_http: bool) -> None:
    """An endpoint built in code gets the checks one read from the environment gets."""
    where = f"the base_url of endpoint {endpoint.name!r}"
    check_base_url(endpoint.base_url, where, sends_key=endpoint.key is not None,
                   allow_http=allow_http)
    if endpoint.key is not None:
        check_key(endpoint.key.reveal(), f"the key of endpoint {endpoint.name!r}")


def parse_deployments(text: str | None) -> dict[str, str]:
    """`AZURE_OPENAI_DEPLOYMENTS="prod-4o=gpt-4o, cheap=gpt-4o-mini"` -> {deployment: model}."""
    out: dict[str, str] = {}
    for part in (text or "").split(","):
        dep, sep, model = part.strip().partition("=")
        if dep.strip():
            out[dep.strip()] = (model if sep else dep).strip()
    return out


def endpoints_from_env(env: Mapping[str, str]) -> list[Endpoint]:
    """Every vendor the environment configures, with keys wrapped as secrets.

    Each key and base URL in use is checked here (`check_key`, `check_base_url`), so a
    bad one is one `ConfigurationError` naming its variable before anything is sent."""
    allow_http = allows_insecure_http(env)

    def key_of(names: tuple[str, ...]) -> Secret | None:
        name, value = first_named(env, names)
        return Secret(check_key(value, name)) if value else None

    def base_of(names: tuple[str, ...], sends_key: bool, default: str = "") -> str:
        name, value = first_named(env, names)
        if not value:
            return default
        return check_base_url(value, name, sends_key=sends_key, allow_http=allow_http)

    found: list[Endpoint] = []
    for spec in VENDORS.values():
        if spec.name == "azure":
            key = key_of(spec.key_variables) or key_of(("AZURE_OPENAI_AD_TOKEN",))
            if not first(env, spec.base_url_variables) or key is None:
                continue
            base = base_of(spec.base_url_variables, True).rstrip("/")
            deployments = parse_deployments(env.get("AZURE_OPENAI_DEPLOYMENTS"))
            found.append(Endpoint(
                "azure", "azure", base, key=key,
                auth="api-key" if first(env, spec.key_variables) else "bearer",
                api_version=env.get("AZURE_OPENAI_API_VERSION") or env.get("OPENAI_API_VERSION")
                or AZURE_DEFAULT_API_VERSION,
                route="v1" if base.endswith("/openai/v1") else "deployments",
                deployments=deployments, models=tuple(deployments),
                default_model=next(iter(deployments), None)))
        elif spec.kind == "compat":
            name, raw = first_named(env, spec.base_url_variables)
            if not raw:
                continue  # a local server is only used when asked for
            if "://" not in raw:
                raw = f"http://{raw}"  # OLLAMA_HOST is often host:port
            key = key_of(spec.key_variables)
            base = check_base_url(raw, name, sends_key=key is not None, allow_http=allow_http)
            if not base.rstrip("/").endswith("/v1"):
                base = base.rstrip("/") + "/v1"
            found.append(Endpoint(spec.name, "compat", base, key=key,
                                  priced=False, default_model=env.get("OLLAMA_MODEL") or None))
        else:
            key = key_of(spec.key_variables)
            if key is not None:
                found.append(Endpoint(spec.name, spec.kind,
                                      base_of(spec.base_url_variables, True, spec.base_url),
                                      key=key, default_model=spec.default_model))
    if first(env, ("LLMDISPATCH_COMPAT_BASE_URL",)):
        ckey = key_of(("LLMDISPATCH_COMPAT_API_KEY",))
        found.append(Endpoint(env.get("LLMDISPATCH_COMPAT_NAME", "local"), "compat",
                              base_of(("LLMDISPATCH_COMPAT_BASE_URL",), ckey is not None),
                              key=ckey, priced=False,
                              default_model=env.get("LLMDISPATCH_COMPAT_MODEL") or None))
    # Every OpenAI-compatible provider of the model catalogue whose key is set (GROQ_API_KEY,
    # DEEPSEEK_API_KEY, ...), checked as the vendors above are.
    from .catalogue import CATALOGUE
    from .catalogue._providers import endpoints as provider_endpoints

    CATALOGUE.configure(env)  # $LLMDISPATCH_CATALOGUE may come from .env
    found += provider_endpoints(
        env, {ep.name for ep in found}, key=lambda value, name: Secret(check_key(value, name)),
        url=lambda value, name: check_base_url(value, name, sends_key=True, allow_http=allow_http))
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


def demo_endpoints(sim: Any, env: Mapping[str, str] | None = None) -> list[Endpoint]:
    """Endpoints pointing at running emulators (a `SimServer`), clearly marked simulated;
    with `env`, also the catalogue's providers whose key it sets (the OpenAI-wire emulator
    serves them)."""
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
    if env is not None and "openai" in sim.emulators:
        from .catalogue._providers import simulated

        out += simulated(sim.base_url("openai").removesuffix("/v1"), env, key, {ep.name for ep in out})
    return out
