"""What the batch tests share: emulators for every vendor with the batch clock at 0,
dispatchers over them (the canary key, a ledger file or memory), and waiting for a job."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmdispatch_nb import Dispatcher, Endpoint, Secret
from llmdispatch_nb.ledger import Ledger
from llmdispatch_nb.resilience import RetryPolicy
from llmdispatch_nb.sim import SimServer, serve
from llmdispatch_nb.sim._batch_core import engine
from tests.conftest import CANARY_KEY

VENDORS = ("openai", "anthropic", "google", "azure")


def batch_sim() -> Iterator[SimServer]:
    with serve(list(VENDORS), time_scale=0) as s:
        yield s


def fresh(sim: SimServer) -> None:
    for emu in sim.emulators.values():
        emu.reset()
        eng = engine(emu)
        eng.time_scale = 0.0
        eng.clear()


def endpoints(sim: SimServer) -> list[Endpoint]:
    key = Secret(CANARY_KEY)
    return [
        Endpoint("openai", "openai", sim.base_url("openai"), key=key, simulated=True),
        Endpoint("anthropic", "anthropic", sim.base_url("anthropic"), key=key, simulated=True),
        Endpoint("google", "gemini", sim.base_url("google"), key=key, simulated=True),
        Endpoint("azure", "azure", sim.base_url("azure"), key=key, auth="api-key",
                 route="deployments", deployments={"gpt-4o-mini": "gpt-4o-mini"},
                 models=("gpt-4o-mini",), simulated=True),
    ]


def dispatcher(sim: SimServer, ledger: Any = None, **kw: Any) -> Dispatcher:
    kw.setdefault("retry", RetryPolicy.none())
    return Dispatcher(endpoints(sim), dotenv=False,
                      ledger=ledger if ledger is not None else Ledger.memory(), **kw)


def ledger_file(tmp: Path) -> Ledger:
    return Ledger(tmp / "ledger.db")
