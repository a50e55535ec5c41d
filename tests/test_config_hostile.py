"""Bad set-up gets one clear error of ours, before anything is sent, and never the key.

Classes, each fuzzed rather than shown by one example (issue 14, items 4 and 9; issue 16,
item 6):
- base URLs: only http and https; plain http carries a key only to a private host or with
  LLMDISPATCH_ALLOW_INSECURE_HTTP=1; any other scheme, a bad port or an unparseable URL is
  one ConfigurationError naming the variable (a few hundred generated URLs, six variables);
- keys with a zero-width space, a no-break space, a byte-order mark or a control character
  (from the environment, a .env file or an Endpoint built in code);
- .env files: a UTF-8 BOM keeps the first key, a Latin-1 byte is one error naming the file
  and line, random lines and bytes read or fail with our error; the file is found upward
  from a notebook's folder to the project root, and `%llm vendors` says which was read;
- call arguments (None prompt, system=123, max_tokens=True, ...) and Budget(nan);
- "did you mean" for a mistyped target, alias, vendor or model; the budget's refusal says
  its advice once.
Each error is checked for the key in its text, args, repr, attributes and cause chain.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

import llmdispatch_nb
from llmdispatch_nb import Dispatcher, Endpoint, Secret
from llmdispatch_nb._config import (
    ALLOW_INSECURE_HTTP,
    endpoints_from_env,
    environment,
    find_dotenv,
    read_dotenv,
)
from llmdispatch_nb.errors import (
    BadRequestError,
    BudgetExceededError,
    ConfigurationError,
    RequestValidationError,
    UnknownTargetError,
)
from llmdispatch_nb.ledger import Ledger
from llmdispatch_nb.resilience import Budget
from llmdispatch_nb.sim import SimServer
from tests._wire_server import WireServer
from tests.conftest import CANARY_KEY
from tests.test_magic_support import Notebook, one_error_line
from tests.test_wire_redaction import leaks

pytest_plugins = ("tests.test_magic_support",)  # its fixtures: shell, nb, demo, d

K = CANARY_KEY


def clean(err: BaseException, key: str = K) -> None:
    """No key, nor a long piece of one, anywhere in the error."""
    assert leaks(key, err) == []
    text = repr(err.args) + repr(vars(err))
    for piece in (key[:12], key[-12:]):
        assert piece not in text, f"a piece of the key is in {text[:200]!r}"


# -- base URLs -----------------------------------------------------------------------------

SCHEMES = ["http", "https", "HTTPS", "Http", "htps", "htp", "httpx", "ftp", "ws", "wss", "file",
           "gopher", "javascript", "", "h ttp", "https+unix"]
PUBLIC = ["api.openai.com", "8.8.8.8", "[2606:4700::1111]", "example.com."]
PRIVATE = ["127.0.0.1", "localhost", "[::1]", "10.1.2.3", "192.168.0.7", "172.16.5.4",
           "169.254.1.1", "ollama", "gpu.local", "host.docker.internal", "llm.localhost"]
BROKEN_HOSTS = ["[::1", "", "exa mple.com", "[zz::1]"]
GOOD_PORTS = ["", ":1", ":443", ":8080", ":65535"]
BAD_PORTS = [":0", ":65536", ":99999", ":-1", ":abc", ":1.5"]
PATHS = ["", "/v1", "/v1/", "/openai/v1?key=abc", "/x#frag"]
URL_VARIABLES = ["OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "GOOGLE_GEMINI_BASE_URL",
                 "AZURE_OPENAI_ENDPOINT", "LLMDISPATCH_COMPAT_BASE_URL", "OLLAMA_BASE_URL"]


def env_for(variable: str, url: str, *, key: bool = True, **extra: str) -> dict[str, str]:
    env = {variable: url, **extra}
    if key:
        env[{"OPENAI_BASE_URL": "OPENAI_API_KEY", "ANTHROPIC_BASE_URL": "ANTHROPIC_API_KEY",
             "GOOGLE_GEMINI_BASE_URL": "GEMINI_API_KEY",
             "AZURE_OPENAI_ENDPOINT": "AZURE_OPENAI_API_KEY",
             "LLMDISPATCH_COMPAT_BASE_URL": "LLMDISPATCH_COMPAT_API_KEY",
             "OLLAMA_BASE_URL": "OLLAMA_API_KEY"}[variable]] = K
    return env


def generated_urls(n: int) -> list[tuple[str, str, str, str]]:
    rng = random.Random(4)
    out = []
    for _ in range(n):
        host = rng.choice(PUBLIC + PRIVATE + BROKEN_HOSTS + ["user:pw@" + rng.choice(PUBLIC)])
        # Weighted towards the good parts, so both outcomes come up often.
        scheme = rng.choice(["http", "https"] if rng.random() < 0.5 else SCHEMES)
        port = rng.choice(GOOD_PORTS if rng.random() < 0.7 else BAD_PORTS)
        out.append((scheme, host, port, rng.choice(PATHS)))
    return out


def is_public(host: str) -> bool:
    return host.split("@")[-1] in PUBLIC


@pytest.mark.parametrize("opt_in", [False, True], ids=["default", "opted-in"])
def test_generated_base_urls_are_used_safely_or_refused_naming_the_variable(opt_in: bool) -> None:
    rng = random.Random(9)
    verdicts = {"accepted": 0, "refused": 0}
    for scheme, host, port, path in generated_urls(400):
        url = f"{scheme}://{host}{port}{path}" if scheme else f"{host}{port}{path}"
        variable = rng.choice(URL_VARIABLES)
        extra = {ALLOW_INSECURE_HTTP: "1"} if opt_in else {}
        try:
            eps = endpoints_from_env(env_for(variable, url, **extra))
        except ConfigurationError as exc:
            verdicts["refused"] += 1
            assert variable in str(exc), (url, str(exc))
            assert "pw@" not in str(exc) and "key=abc" not in str(exc)  # URL secrets stay out
            clean(exc)
            continue
        verdicts["accepted"] += 1
        (ep,) = eps
        parts = urlsplit(ep.base_url)
        # Whatever was accepted is a URL httpx reads, over http(s), with a real host and port.
        httpx.URL(ep.base_url)
        assert parts.scheme.lower() in ("http", "https"), url
        assert parts.hostname and (parts.port is None or 1 <= parts.port <= 65535), url
        if parts.scheme.lower() == "http" and ep.key is not None:
            assert opt_in or not is_public(host), f"{url}: a key in clear text to {host}"
        # What must never be accepted, whatever the variable:
        assert scheme.lower() in ("http", "https") or (variable == "OLLAMA_BASE_URL" and "://" not in url)
        assert port not in BAD_PORTS and host not in BROKEN_HOSTS, url
    assert min(verdicts.values()) > 50, verdicts  # both outcomes were exercised


@pytest.mark.parametrize("scheme", [s for s in SCHEMES if s.lower() not in ("http", "https", "")])
def test_every_other_scheme_is_refused_with_its_name(scheme: str) -> None:
    with pytest.raises(ConfigurationError, match="OPENAI_BASE_URL must start with https://") as e:
        endpoints_from_env(env_for("OPENAI_BASE_URL", f"{scheme}://api.openai.com/v1"))
    clean(e.value)


def test_a_typo_in_the_scheme_is_named() -> None:
    with pytest.raises(ConfigurationError, match=r"did you mean https://\?") as e:
        endpoints_from_env(env_for("OPENAI_BASE_URL", "htps://api.openai.com/v1"))
    assert "Nothing was sent" in str(e.value)


@pytest.mark.parametrize(("url", "fragment"), [
    ("http://127.0.0.1:99999/v1", "Port out of range"),
    ("http://[::1", "Invalid IPv6 URL"),
    ("http://h:abc/v1", "Port could not be cast"),
    ("https://:443/v1", "has no host"),
    ("http://127.0.0.1:0/v1", "port 0"),
])
def test_bad_ports_and_unreadable_urls_are_one_error(url: str, fragment: str) -> None:
    with pytest.raises(ConfigurationError, match="OPENAI_BASE_URL") as e:
        endpoints_from_env(env_for("OPENAI_BASE_URL", url))
    assert fragment in str(e.value)
    clean(e.value)


def test_plain_http_to_a_public_host_needs_the_opt_in() -> None:
    url = "http://api.example.com/v1"
    with pytest.raises(ConfigurationError, match=ALLOW_INSECURE_HTTP) as e:
        endpoints_from_env(env_for("OPENAI_BASE_URL", url))
    clean(e.value)
    (ep,) = endpoints_from_env(env_for("OPENAI_BASE_URL", url, **{ALLOW_INSECURE_HTTP: "1"}))
    assert ep.base_url == url
    # No key, nothing to protect: a keyless local-style server over http is fine anywhere.
    (local,) = endpoints_from_env(env_for("LLMDISPATCH_COMPAT_BASE_URL", url, key=False))
    assert local.key is None
    # Loopback and the private ranges need no opt-in.
    for host in PRIVATE:
        (ep,) = endpoints_from_env(env_for("OPENAI_BASE_URL", f"http://{host}:8000/v1"))
        assert ep.base_url.startswith("http://")


def test_a_bad_url_fails_before_anything_is_sent() -> None:
    with WireServer() as server:
        port = urlsplit(server.url).port
        for url in (f"htps://127.0.0.1:{port}/v1", f"ws://127.0.0.1:{port}/v1"):
            with pytest.raises(ConfigurationError, match="OPENAI_BASE_URL"):
                Dispatcher(env={"OPENAI_API_KEY": K, "OPENAI_BASE_URL": url}, dotenv=False)
        # An Endpoint built in code gets the same checks.
        with pytest.raises(ConfigurationError, match="base_url of endpoint 'x'") as e:
            Dispatcher([Endpoint("x", "openai", f"ftp://127.0.0.1:{port}/v1", key=Secret(K))],
                       dotenv=False)
        clean(e.value)
        with pytest.raises(ConfigurationError, match=ALLOW_INSECURE_HTTP):
            Dispatcher([Endpoint("x", "openai", "http://8.8.8.8/v1", key=Secret(K))], dotenv=False)
        assert server.seen == []


# -- keys ----------------------------------------------------------------------------------

BAD_CHARS = ["\u200b", "\xa0", "\u2060", "\ufeff", "\u200e", "\xad", "\x00", "\x07", "\x1b",
             "\x7f", "\t", " ", "é", "€", "😀", "\u2028", "\u3000"]
KEY_VARIABLES = {"OPENAI_API_KEY": {}, "ANTHROPIC_API_KEY": {}, "GEMINI_API_KEY": {},
                 "GOOGLE_API_KEY": {},
                 "AZURE_OPENAI_API_KEY": {"AZURE_OPENAI_ENDPOINT": "https://r.openai.azure.com"},
                 "LLMDISPATCH_COMPAT_API_KEY": {"LLMDISPATCH_COMPAT_BASE_URL": "http://127.0.0.1:1/v1"}}


def bad_keys(n: int) -> Iterator[tuple[str, str, int]]:
    rng = random.Random(16)
    for _ in range(n):
        ch = rng.choice(BAD_CHARS)
        pos = rng.randrange(1, len(K))  # inside the key (a space at either end is trimmed)
        yield K[:pos] + ch + K[pos:], ch, pos


def test_keys_with_invisible_or_control_characters_are_one_error_without_the_key() -> None:
    rng = random.Random(3)
    for bad, ch, pos in bad_keys(300):
        variable = rng.choice(list(KEY_VARIABLES))
        with pytest.raises(ConfigurationError) as e:
            endpoints_from_env({variable: bad, **KEY_VARIABLES[variable]})
        msg = str(e.value)
        assert variable in msg and f"U+{ord(ch):04X}" in msg and f"character {pos + 1}" in msg
        clean(e.value)
        clean(e.value, bad)


def test_a_bad_key_in_a_dotenv_file_or_an_endpoint_is_caught_too(tmp_path: Path) -> None:
    for bad, _, _ in bad_keys(20):
        f = tmp_path / ".env"
        f.write_text(f"OPENAI_API_KEY={bad}\n", encoding="utf-8")
        with pytest.raises(ConfigurationError, match="OPENAI_API_KEY") as e:
            Dispatcher(env={}, dotenv=str(f))
        clean(e.value)
        with pytest.raises(ConfigurationError, match="the key of endpoint 'mine'") as e:
            Dispatcher([Endpoint("mine", "openai", "https://api.openai.com/v1", key=Secret(bad))],
                       dotenv=False)
        clean(e.value)


def test_spaces_around_a_key_are_trimmed() -> None:
    (ep,) = endpoints_from_env({"OPENAI_API_KEY": f"\xa0 {K} \xa0"})
    assert ep.key is not None and ep.key.reveal() == K


# -- .env files ------------------------------------------------------------------------------


def test_a_byte_order_mark_keeps_the_first_key(tmp_path: Path) -> None:
    f = tmp_path / ".env"
    f.write_bytes(b"\xef\xbb\xbfOPENAI_API_KEY=" + K.encode() + b"\r\nANTHROPIC_API_KEY=a\r\n")
    assert read_dotenv(f) == {"OPENAI_API_KEY": K, "ANTHROPIC_API_KEY": "a"}
    with Dispatcher(env={}, dotenv=str(f)) as d:
        assert not d.demo and {"openai", "anthropic"} <= set(d.endpoints)


@pytest.mark.parametrize(("content", "line", "where"), [
    (b"# caf\xe9\nOPENAI_API_KEY=" + K.encode() + b"\n", 1, ""),
    (b"OPENAI_API_KEY=" + K.encode() + b"\xe9\n", 1, "in the value of OPENAI_API_KEY"),
    (b"A=1\nB=2\nOPENAI_API_KEY=" + K[:10].encode() + b"\xa0" + K[10:].encode() + b"\n", 3,
     "in the value of OPENAI_API_KEY"),
])
def test_a_latin1_byte_is_one_error_naming_file_and_line(tmp_path: Path, content: bytes,
                                                         line: int, where: str) -> None:
    f = tmp_path / ".env"
    f.write_bytes(content)
    with pytest.raises(ConfigurationError) as e:
        Dispatcher(env={}, dotenv=str(f))
    msg = str(e.value)
    assert str(f) in msg and f"line {line}" in msg and "UTF-8" in msg and where in msg
    assert e.value.__cause__ is None and e.value.__context__ is None
    clean(e.value)


def test_generated_dotenv_files_read_or_fail_with_our_error(tmp_path: Path) -> None:
    rng = random.Random(6)
    pieces = [b"export ", b"# note ", b"'", b'"', b" ", b"\t", b"\r\n", b"\n", b"=", b"#",
              b"\xef\xbb\xbf", b"\xe9", b"\xa0", b"\xff", b"\x00", "é".encode(), "\u200b".encode(),
              b"KEY", b"OPENAI_API_KEY", b"value", K.encode()]
    outcomes = {"read": 0, "refused": 0}
    f = tmp_path / ".env"
    for _ in range(300):
        content = b"".join(rng.choice(pieces) for _ in range(rng.randrange(1, 25)))
        f.write_bytes(content)
        try:
            values = read_dotenv(f)
        except ConfigurationError as exc:
            outcomes["refused"] += 1
            assert str(f) in str(exc) and ("UTF-8" in str(exc) or "retype the name" in str(exc))
            clean(exc)
        else:
            outcomes["read"] += 1
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in values.items())
            assert not any(k.startswith("\ufeff") for k in values)  # a BOM never eats a name
        # Through the dispatcher, whatever the file: our error or a dispatcher.
        try:
            Dispatcher(env={}, dotenv=str(f), demo=False, ledger=Ledger.memory()).close()
        except ConfigurationError as exc:
            clean(exc)
    assert min(outcomes.values()) > 30, outcomes


def project(tmp_path: Path, marker: str = "pyproject.toml") -> Path:
    root = tmp_path / "proj"
    (root / "notebooks" / "deeper").mkdir(parents=True)
    if marker == ".git":
        (root / ".git").mkdir()
    else:
        (root / marker).write_text("[project]\nname = 'x'\n")
    return root


@pytest.mark.parametrize("marker", ["pyproject.toml", ".git"])
def test_the_dotenv_at_the_project_root_is_found_from_a_notebooks_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, marker: str) -> None:
    root = project(tmp_path, marker)
    (root / ".env").write_text(f"OPENAI_API_KEY={K}\n")
    monkeypatch.chdir(root / "notebooks" / "deeper")
    assert find_dotenv() == (root / ".env").resolve()
    with Dispatcher(env={}) as d:
        assert not d.demo and "openai" in d.endpoints
        assert d.dotenv_path == (root / ".env").resolve()


def test_the_search_stops_at_the_project_root_and_at_home(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    root = project(tmp_path)
    (tmp_path / ".env").write_text(f"OPENAI_API_KEY={K}\n")  # above the project: not ours
    monkeypatch.chdir(root / "notebooks")
    assert find_dotenv() is None
    home = tmp_path / "home"
    (home / "work" / "nb").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(home / "work" / "nb")
    assert find_dotenv() is None  # tmp_path/.env is above home
    (home / "work" / ".env").write_text("A=1\n")
    assert find_dotenv() == (home / "work" / ".env").resolve()
    assert environment(True, env={}).dotenv_path == (home / "work" / ".env").resolve()
    assert environment(False, env={}).dotenv_path is None


def test_llm_vendors_says_which_dotenv_was_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               openai_sim: SimServer, nb: Notebook) -> None:
    root = project(tmp_path)
    (root / ".env").write_text(f"OPENAI_API_KEY={K}\nOPENAI_BASE_URL={openai_sim.base_url('openai')}\n")
    monkeypatch.chdir(root / "notebooks")
    with Dispatcher(env={}) as real:
        llmdispatch_nb.set_default(real)
        run = nb.run("%llm vendors")
    text = run.published[-1].data["text/plain"]
    assert f"settings read from {(root / '.env').resolve()}" in text
    assert K not in text
    with Dispatcher(env={"OPENAI_API_KEY": K}, dotenv=False) as bare:
        llmdispatch_nb.set_default(bare)
        assert "no .env file read" in nb.run("%llm vendors").published[-1].data["text/plain"]


# -- call arguments and budgets ---------------------------------------------------------------


@pytest.fixture(scope="module")
def quiet() -> Iterator[Dispatcher]:
    """Nothing listens at its address: a call that got past the checks would fail to connect."""
    with Dispatcher([Endpoint("openai", "openai", "http://127.0.0.1:9/v1", key=Secret(K),
                              default_model="gpt-4o-mini")],
                    dotenv=False, ledger=Ledger.memory()) as d:
        yield d


BAD_CALLS: list[tuple[tuple[Any, ...], dict[str, Any], str]] = [
    ((None,), {}, "the prompt is None"),
    # A lone surrogate (half an emoji from a bad decode) in anything sent: no vendor reads it.
    (("a broken \ud83d emoji",), {}, "the prompt has a broken character"),
    (([{"role": "user", "content": "x\udc00"}],), {}, "message 0 of the prompt has a broken"),
    ((["see", "part \ud800"],), {}, "part 1 of the prompt has a broken"),
    (("hi",), {"system": "sys \udfff"}, "system has a broken character"),
    (("hi",), {"stop": ["ok", "\ud800"]}, "a stop sequence has a broken character"),
    ((b"hi",), {}, "the prompt is bytes"),
    (({"role": "user", "content": "hi"},), {}, "one message as a dict"),
    ((42,), {}, "the prompt is a int"),
    (([1],), {}, "message 0 of the prompt is a int"),
    (([{"role": "user", "content": None}],), {}, "content of type None"),
    (("hi", 5), {}, "target must be a string"),
    (("hi",), {"system": 123}, "system must be a string"),
    (("hi",), {"user": ["u"]}, "user must be a string"),
    (("hi",), {"max_tokens": True}, "max_tokens must be a whole number"),
    (("hi",), {"max_tokens": 10.0}, "max_tokens must be a whole number"),
    (("hi",), {"seed": 1.5}, "seed must be a whole number"),
    (("hi",), {"temperature": True}, "temperature must be a number"),
    (("hi",), {"temperature": "0.2"}, "temperature must be a number"),
    (("hi",), {"temperature": math.nan}, "temperature must be between"),
    (("hi",), {"top_p": False}, "top_p must be a number"),
    (("hi",), {"stop": [1]}, "stop must be a string or a list"),
    (("hi",), {"tags": "demo"}, "tags must be a list of strings"),
    (("hi",), {"tags": [None]}, "tags must be a list of strings"),
    (("hi",), {"metadata": {"a": 1}}, "metadata must be a dict of strings"),
    (("hi",), {"max_token": 5}, "did you mean max_tokens?"),
    (("hi",), {"api_key": K}, "unknown parameter 'api_key'"),
    (("hi",), {"max_cost": math.nan}, "max_cost must be a number"),
    (("hi",), {"max_cost": -1}, "max_cost must be a number"),
    (("hi",), {"max_cost": True}, "max_cost must be a number"),
    (("hi",), {"cache": "yes"}, "cache must be True, False or None"),
    (("hi",), {"fallbacks": 5}, "fallbacks must be a target"),
    (("hi",), {"strategy": 5}, "strategy must be a name"),
]


@pytest.mark.parametrize("how", ["send", "stream", "request"])
@pytest.mark.parametrize(("args", "kwargs", "fragment"), BAD_CALLS,
                         ids=[c[2][:30] for c in BAD_CALLS])
def test_bad_call_arguments_are_one_error_naming_the_argument(
        quiet: Dispatcher, how: str, args: tuple[Any, ...], kwargs: dict[str, Any],
        fragment: str) -> None:
    if how == "request" and any(k in kwargs for k in ("max_cost", "cache", "fallbacks", "strategy")):
        fragment = "unknown parameter"  # routing options belong to a call, not a Request
    before = len(quiet.session_records())
    with pytest.raises(RequestValidationError) as e:
        getattr(quiet, how)(*args, **kwargs)
    assert fragment in str(e.value)
    clean(e.value)
    assert len(quiet.session_records()) == before  # refused at the door: nothing planned


@pytest.mark.parametrize(("make", "fragment"), [
    (lambda: Budget(math.nan), "the budget must be a finite number"),
    (lambda: Budget(math.inf), "the budget must be a finite number"),
    (lambda: Budget(-1.0), "the budget must be a finite number"),
    (lambda: Budget(True), "the budget must be a finite number"),
    (lambda: Budget("5"), "the budget must be a finite number"),
    (lambda: Budget(per_tag={"a": math.nan}), "the budget for tag 'a'"),
    (lambda: Budget(per_tag=[("a", 1.0)]), "per_tag must map tag names"),
    (lambda: Budget(per_tag={1: 1.0}), "per_tag's keys must be tag names"),
    (lambda: Budget().set_limit(math.nan), "the budget must be a finite number"),
    (lambda: Dispatcher([], dotenv=False, budget=math.nan), "the budget must be a finite number"),
])
def test_bad_budgets_are_one_configuration_error(make: Any, fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=r"None for no limit|per_tag") as e:
        make()
    assert fragment in str(e.value)


# -- "did you mean", and advice said once ------------------------------------------------------


@pytest.mark.parametrize(("typed", "meant"), [
    ("gtp", "gpt"), ("claud", "claude"), ("gemni", "gemini"), ("GPT", "gpt"),
    ("anthropc:claude-haiku-4-5", "anthropic:claude-haiku-4-5"),
    ("opneai:gpt-4o", "openai:gpt-4o"),
])
def test_an_unknown_target_suggests_the_nearest(quiet: Dispatcher, typed: str, meant: str) -> None:
    with pytest.raises(UnknownTargetError) as e:
        quiet.send("hi", typed)
    assert e.value.suggestion == meant and f"did you mean {meant!r}?" in str(e.value)


def test_nothing_close_suggests_nothing(quiet: Dispatcher) -> None:
    with pytest.raises(UnknownTargetError) as e:
        quiet.send("hi", "zzzzzz")
    assert e.value.suggestion is None and "did you mean" not in str(e.value)


def test_a_mistyped_model_the_vendor_refuses_suggests_the_nearest(openai_sim: SimServer) -> None:
    eps = [Endpoint("openai", "openai", openai_sim.base_url("openai"), key=Secret(K),
                    default_model="gpt-4o-mini")]
    with Dispatcher(eps, dotenv=False) as d:
        with pytest.raises(BadRequestError) as e:
            d.send("hi", "openai:gpt-4o-mnii", max_tokens=5)
        assert e.value.status == 404 and "did you mean 'openai:gpt-4o-mini'?" in str(e.value)


def test_the_budget_refusal_gives_its_advice_once(d: Dispatcher, nb: Notebook) -> None:
    with pytest.raises(BudgetExceededError) as e:
        Budget(0.000001).reserve(0.01, what="openai:gpt-4o-mini")
    assert str(e.value).count("cheaper model") == 1
    assert nb.run("%llm budget 0.0000001").success
    try:
        line = one_error_line(nb.cell("gpt", "Name three rivers."))
    finally:
        nb.run("%llm budget none")
    assert line.count("cheaper model") == 1 and line.count("aise the") == 1, line
    assert "%llm budget AMOUNT" in line


def test_a_tiny_budget_is_not_shown_as_zero() -> None:
    with pytest.raises(BudgetExceededError) as e:
        Budget(0.0000001).reserve(0.01, what="openai:gpt-4o-mini")
    assert "the budget is $1.0e-07" in str(e.value)


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"system": 123}, "system must be a string"),
    ({"max_tokens": True}, "max_tokens must be a whole number"),
    ({"tags": [3]}, "tags must be a list of strings"),
])
def test_a_request_built_by_hand_gets_the_same_checks(quiet: Dispatcher, kwargs: dict[str, Any],
                                                      fragment: str) -> None:
    req = llmdispatch_nb.Request("hi", "openai:gpt-4o-mini", **kwargs)
    for how in (quiet.send, quiet.stream):
        with pytest.raises(RequestValidationError, match=fragment):
            how(req)
