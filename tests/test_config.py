"""Where vendors come from, how targets are read, and what bad input gets back."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from llmdispatch_nb import Dispatcher, Endpoint, Request, Secret
from llmdispatch_nb._config import endpoints_from_env, parse_deployments, read_dotenv
from llmdispatch_nb.errors import (
    ConfigurationError,
    MissingKeyError,
    RequestValidationError,
    UnknownTargetError,
    redact,
)
from tests.conftest import CANARY_KEY, assert_no_canary


def test_keys_from_the_environment_become_secrets() -> None:
    eps = endpoints_from_env({"OPENAI_API_KEY": CANARY_KEY, "GOOGLE_API_KEY": CANARY_KEY})
    names = {e.name: e for e in eps}
    assert set(names) == {"openai", "google"}
    assert names["google"].kind == "gemini"
    assert names["openai"].key is not None and names["openai"].key.reveal() == CANARY_KEY
    assert_no_canary(repr(eps), str(names["openai"].key), repr(names["openai"]))


def test_azure_needs_key_and_endpoint_and_reads_deployments() -> None:
    assert endpoints_from_env({"AZURE_OPENAI_API_KEY": "k"}) == []
    (ep,) = endpoints_from_env({
        "AZURE_OPENAI_API_KEY": "k", "AZURE_OPENAI_ENDPOINT": "https://r.openai.azure.com/",
        "AZURE_OPENAI_DEPLOYMENTS": "prod-4o=gpt-4o, mini"})
    assert ep.base_url == "https://r.openai.azure.com"
    assert ep.deployments == {"prod-4o": "gpt-4o", "mini": "mini"}
    assert ep.api_version and ep.auth == "api-key" and ep.route == "deployments"


def test_local_openai_compatible_server_from_ollama_host() -> None:
    (ep,) = endpoints_from_env({"OLLAMA_HOST": "127.0.0.1:11434"})
    assert (ep.name, ep.kind, ep.base_url, ep.key, ep.priced) == (
        "ollama", "compat", "http://127.0.0.1:11434/v1", None, False)


def test_dotenv_file_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    f = tmp_path / ".env"
    f.write_text('# comment\nexport OPENAI_API_KEY="from-file"\nANTHROPIC_API_KEY=a # trailing\n')
    assert read_dotenv(f) == {"OPENAI_API_KEY": "from-file", "ANTHROPIC_API_KEY": "a"}
    d = Dispatcher(env={"OPENAI_API_KEY": "from-env"}, dotenv=str(f))
    try:
        assert d.endpoints["openai"].key == Secret("from-env")
        assert "anthropic" in d.endpoints and not d.demo
    finally:
        d.close()


def test_parse_deployments_ignores_blanks() -> None:
    assert parse_deployments(" , a=b,,c ") == {"a": "b", "c": "c"}


def test_a_vendor_without_a_key_names_the_variable_to_set() -> None:
    with Dispatcher(env={"OPENAI_API_KEY": CANARY_KEY}, dotenv=False) as d:
        with pytest.raises(MissingKeyError) as e:
            d.send("hi", "anthropic:claude-haiku-4-5")
        assert "ANTHROPIC_API_KEY" in str(e.value)
        with pytest.raises(MissingKeyError) as e2:
            d.send("hi", "gemini-2.5-flash")
        assert "GEMINI_API_KEY" in str(e2.value)
        with pytest.raises(MissingKeyError) as e3:
            d.send("hi", "azure:prod")
        assert "AZURE_OPENAI_ENDPOINT" in str(e3.value)
        assert_no_canary(str(e.value), str(e2.value), str(e3.value), repr(d))


def test_unknown_vendor_or_model_lists_what_exists() -> None:
    with Dispatcher(env={"OPENAI_API_KEY": "k"}, dotenv=False, aliases={"fast": "openai:gpt-4o-mini"}) as d:
        with pytest.raises(UnknownTargetError) as e:
            d.send("hi", "nosuchvendor:large")  # mistral: is a catalogue provider now
        msg = str(e.value)
        assert "nosuchvendor" in msg and "openai" in msg and "fast" in msg and "vendor:model" in msg
        with pytest.raises(UnknownTargetError):
            d.send("hi", "no-such-model")
        with pytest.raises(UnknownTargetError):
            d.send("hi", "openai:")


def test_alias_loops_are_reported() -> None:
    with (Dispatcher(env={"OPENAI_API_KEY": "k"}, dotenv=False, aliases={"a": "b", "b": "a"}) as d,
          pytest.raises(UnknownTargetError, match="loop")):
        d.plan(Request("hi", "a"))


def test_aliases_and_families_resolve() -> None:
    with Dispatcher(env={"OPENAI_API_KEY": "k", "ANTHROPIC_API_KEY": "k"}, dotenv=False) as d:
        assert [c.key for c in d.plan(Request("hi", "claude")).candidates] == ["anthropic:claude-haiku-4-5"]
        assert [c.key for c in d.plan(Request("hi", "gpt-4o")).candidates] == ["openai:gpt-4o"]
        assert [c.key for c in d.plan(Request("hi", "o4-mini")).candidates] == ["openai:o4-mini"]
        assert next(c.key for c in d.plan(Request("hi", None)).candidates).startswith("openai:")


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"messages": ""}, "empty"),
        ({"messages": "   "}, "empty"),
        ({"messages": []}, "no messages"),
        ({"messages": "hi", "temperature": 3}, "temperature"),
        ({"messages": "hi", "temperature": -0.1}, "temperature"),
        ({"messages": "hi", "max_tokens": 0}, "max_tokens"),
        ({"messages": "hi", "max_tokens": 1.5}, "max_tokens"),
        ({"messages": "hi", "top_p": 0}, "top_p"),
        ({"messages": "hi", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"messages": "hi", "stop": [""]}, "stop"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "role"),
        ({"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]}, "system"),
    ],
)
def test_bad_requests_get_one_clear_error(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(RequestValidationError, match=fragment):
        Request(**kwargs)  # type: ignore[arg-type]


def test_leading_system_message_is_lifted_out() -> None:
    r = Request([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}])
    assert r.system == "be brief" and [m.role for m in r.messages] == ["user"]


def test_secrets_mask_everywhere_and_refuse_pickling() -> None:
    s = Secret(CANARY_KEY)
    ep = Endpoint("openai", "openai", "http://x/v1", key=s)
    assert_no_canary(repr(s), str(s), repr(ep), f"{ep}", str([ep]))
    with pytest.raises(TypeError):
        pickle.dumps(s)
    assert CANARY_KEY not in redact(f"Authorization: Bearer {CANARY_KEY}")
    assert "[redacted]" in redact("api-key: abcdefgh12345678")


def test_unknown_adapter_kind_fails_at_configuration() -> None:
    with pytest.raises(ConfigurationError, match="no adapter"):
        Dispatcher([Endpoint("x", "no-such-kind", "http://127.0.0.1:1")], dotenv=False)
