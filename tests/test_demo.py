"""Demo mode: with no key at all the emulators serve every vendor, labelled as simulated;
`python -m llmdispatch_nb.sim` serves them from the command line."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest

from llmdispatch_nb import Dispatcher
from llmdispatch_nb.errors import ConfigurationError
from llmdispatch_nb.ledger import MemoryLedger


def test_no_keys_means_demo_mode_with_every_vendor_simulated() -> None:
    with Dispatcher(env={}, dotenv=False, ledger=MemoryLedger(), sim_time_scale=0) as d:
        assert d.demo and "demo" in repr(d)
        assert set(d.endpoints) == {"openai", "anthropic", "google", "azure"}
        assert all(ep.simulated for ep in d.endpoints.values())
        for target in ("openai:gpt-4o-mini", "anthropic:claude-haiku-4-5", "google:gemini-2.5-flash",
                       "azure:gpt-4o-mini", "claude", "gemini-2.5-pro"):
            r = d.send("Hello there", target, max_tokens=30)
            assert r.simulated and r.text.startswith("[simulated")
            assert r.cost.usd is not None and r.cost.usd > 0, target
        streamed = d.stream("Hello", "google:gemini-2.5-flash", max_tokens=20).result()
        assert streamed.simulated and streamed.ttft_s is not None


def test_a_key_for_one_vendor_turns_demo_mode_off() -> None:
    with Dispatcher(env={"OPENAI_API_KEY": "k"}, dotenv=False, ledger=MemoryLedger()) as d:
        assert not d.demo and set(d.endpoints) == {"openai"}


def test_demo_can_be_forced_even_with_keys() -> None:
    with Dispatcher(env={"OPENAI_API_KEY": "k", "LLMDISPATCH_DEMO": "1"}, dotenv=False,
                    ledger=MemoryLedger(), sim_time_scale=0) as d:
        assert d.demo and d.endpoints["openai"].simulated


def test_the_emulators_pace_can_be_set_from_the_environment() -> None:
    # 0: answers at once; the profile's time to first token alone is ~0.4 s at pace 1.
    env = {"LLMDISPATCH_SIM_TIME_SCALE": "0"}
    with Dispatcher(env=env, dotenv=False, ledger=MemoryLedger()) as d:
        assert {e.time_scale for e in d.sim.emulators.values()} == {0.0}
        r = d.send("Quick.", "anthropic:claude-haiku-4-5", max_tokens=40)
        assert r.latency_s is not None and r.latency_s < 0.3
    with Dispatcher(env={"LLMDISPATCH_SIM_TIME_SCALE": " 0.25 "}, dotenv=False,
                    ledger=MemoryLedger()) as d:
        assert {e.time_scale for e in d.sim.emulators.values()} == {0.25}
    with Dispatcher(env=env, dotenv=False, ledger=MemoryLedger(), sim_time_scale=2) as d:
        assert {e.time_scale for e in d.sim.emulators.values()} == {2.0}  # the argument wins


@pytest.mark.parametrize("value", ["fast", "-1", "inf", "nan"])
def test_a_bad_pace_in_the_environment_is_one_clear_error(value: str) -> None:
    with pytest.raises(ConfigurationError, match="LLMDISPATCH_SIM_TIME_SCALE must be a number "
                                                 r">= 0 \(1 = the vendors' pace, 0 = answer at once\)"):
        Dispatcher(env={"LLMDISPATCH_SIM_TIME_SCALE": value}, dotenv=False,
                   ledger=MemoryLedger())


def test_sim_command_prints_one_line_per_vendor_and_serves_until_stopped() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "llmdispatch_nb.sim", "--time-scale", "0"],
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().split() for _ in range(4)]
        urls = dict(lines)  # type: ignore[arg-type]
        assert set(urls) == {"openai", "anthropic", "google", "azure"}
        assert all(u.startswith("http://127.0.0.1:") for u in urls.values())
        r = httpx.get(urls["openai"] + "/models", headers={"Authorization": "Bearer any"})
        assert r.status_code == 200 and r.json()["data"]
    finally:
        proc.terminate()
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
            pytest.fail("the sim command did not stop on SIGTERM")
        if proc.stdout is not None:
            proc.stdout.close()


def test_emulated_tokens_keep_their_schedule_when_the_server_wakes_late(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A server loop that wakes late for one token does not push every later token back:
    each is due at a time fixed from the start, as a model's tokens are. Checked on a
    clock of our own, every sleep overshooting by 4 ms."""
    import asyncio
    import random

    from llmdispatch_nb.sim import _core

    profile = _core.Profile("m", ttft_s=0.3, tokens_per_s=50.0, jitter=0.0)
    now = [0.0]
    woken_at: list[float] = []

    async def late_sleep(seconds: float) -> None:
        now[0] += seconds + 0.004

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.time = lambda: now[0]  # type: ignore[method-assign]
        async for _ in _core.paced([f"t{i}" for i in range(40)], profile, 1.0,
                                   random.Random(1)):
            woken_at.append(now[0])
        woken_at.append(now[0])

    monkeypatch.setattr(_core.asyncio, "sleep", late_sleep)
    asyncio.run(main())
    # The first token at ttft, the answer over at ttft + 40 gaps: each within one
    # overshoot, not forty of them.
    assert 0.3 <= woken_at[0] <= 0.3 + 0.0045
    assert _core.total_time(profile, 40, 1.0) <= woken_at[-1] <= 0.3 + 40 / 50 + 0.0045


def test_a_reset_cuts_only_its_own_connection_when_a_client_port_is_shared() -> None:
    """One client port can hold connections to two emulators at once (Linux shares an
    ephemeral port across destinations): a reset fault on one must leave the other be."""
    import socket

    from llmdispatch_nb.sim import serve

    def connect(port: int, local_port: int) -> socket.socket:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", local_port))
        s.connect(("127.0.0.1", port))
        s.settimeout(5)
        return s

    def ask(s: socket.socket, body: bytes) -> bytes:
        """One request; the whole response back (b"" if the server closed instead)."""
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n"
                  b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                  % (len(body), body))
        got = b""
        while b"\r\n\r\n" not in got:
            part = s.recv(65536)
            if not part:
                return got
            got += part
        head, _, rest = got.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        while len(rest) < length:
            rest += s.recv(65536)
        return head + b"\r\n\r\n" + rest

    body = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}'
    with serve(["openai", "azure"], time_scale=0) as sim:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            local_port = probe.getsockname()[1]
        to_openai = connect(sim.ports["openai"], local_port)
        to_azure = connect(sim.ports["azure"], local_port)  # the same client port
        try:
            assert ask(to_openai, body).startswith(b"HTTP/1.1 200")
            sim.emulators["openai"].faults.script("reset")
            with pytest.raises(ConnectionError):
                if not ask(to_openai, body):
                    raise ConnectionResetError("closed")
            # The connection to the other emulator is still there and answers.
            to_azure.sendall(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
            assert to_azure.recv(65536).startswith(b"HTTP/1.1 404")
        finally:
            to_openai.close()
            to_azure.close()
