"""Shared test fixtures: emulators on loopback, a canary key, a temporary data dir."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator

# The ledger's writer thread may import numpy to compact column blocks; pytest.approx
# peeks at sys.modules['numpy'] and trips on a half-imported module. Import it up front.
import numpy  # noqa: F401
import pytest

from llmdispatch_nb.sim import SimServer, serve

# Set before any fixture runs: module- and session-scoped fixtures are built before the
# per-test `_isolated_home`, and must not write to the user's real ~/.llmdispatch either.
os.environ["LLMDISPATCH_HOME"] = tempfile.mkdtemp(prefix="llmdispatch-tests-")
os.environ.pop("LLMDISPATCH_DEMO", None)

# A key that must never show up anywhere: outputs, reprs, errors, logs, files.
CANARY_KEY = "sk-canary-7f3a9c2e-do-not-leak"


def assert_no_canary(*texts: object) -> None:
    for t in texts:
        s = t if isinstance(t, str) else (t.decode("utf-8", "replace") if isinstance(t, bytes) else repr(t))
        assert CANARY_KEY not in s, f"the canary key leaked into: {s[:200]!r}"


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test touches the user's real data dir, keys or .env."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("LLMDISPATCH_HOME", str(home))
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY",
                "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "OLLAMA_BASE_URL", "OLLAMA_HOST",
                "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "GOOGLE_GEMINI_BASE_URL",
                "LLMDISPATCH_DEMO", "LLMDISPATCH_DEFAULT_TARGET", "LLMDISPATCH_COMPAT_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(home)


@pytest.fixture
def log_text(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    yield caplog


def _serve(vendor: str) -> Iterator[SimServer]:
    with serve([vendor], time_scale=0) as sim:
        yield sim


@pytest.fixture(scope="module")
def openai_sim() -> Iterator[SimServer]:
    yield from _serve("openai")


@pytest.fixture(scope="module")
def anthropic_sim() -> Iterator[SimServer]:
    yield from _serve("anthropic")


@pytest.fixture(scope="module")
def gemini_sim() -> Iterator[SimServer]:
    yield from _serve("google")


@pytest.fixture(scope="module")
def azure_sim() -> Iterator[SimServer]:
    yield from _serve("azure")
