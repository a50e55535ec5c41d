"""A message names its vendor once (issue 14.12): an error re-raised as another (a
broken stream wrapping the transport error, a stream's protocol error) keeps the label it
has instead of gaining a second one ("fake: fake: ...")."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from llmdispatch_nb import Dispatcher, Endpoint, Secret
from llmdispatch_nb.errors import MidStreamError, ProtocolError, ServerError
from llmdispatch_nb.ledger import MemoryLedger
from llmdispatch_nb.resilience import CircuitBreaker, RetryPolicy
from llmdispatch_nb.sim import SimServer, serve
from tests.conftest import CANARY_KEY

KINDS = {"openai": ("openai", "gpt-4o-mini"), "anthropic": ("anthropic", "claude-haiku-4-5"),
         "google": ("gemini", "gemini-2.5-flash")}


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with serve(tuple(KINDS), time_scale=0) as s:
        yield s


@pytest.fixture(scope="module")
def d(sim: SimServer) -> Iterator[Dispatcher]:
    eps = [Endpoint(f"fake{emu}", kind, sim.base_url(emu), key=Secret(CANARY_KEY),
                    simulated=True, models=(model,))
           for emu, (kind, model) in KINDS.items()]
    with Dispatcher(eps, dotenv=False, ledger=MemoryLedger(), cache=False,
                    retry=RetryPolicy.none(), timeout=httpx.Timeout(3.0),
                    breaker=CircuitBreaker(threshold=1.0, min_calls=50, window=50)) as disp:
        yield disp


@pytest.mark.parametrize("emu", list(KINDS))
def test_a_stream_broken_after_text_names_its_vendor_once(sim: SimServer, d: Dispatcher,
                                                          emu: str) -> None:
    sim.emulators[emu].faults.script("midstream-disconnect")
    with pytest.raises(MidStreamError) as caught:
        d.stream("Tell me about rivers and lakes.", f"fake{emu}:{KINDS[emu][1]}").result()
    msg = str(caught.value)
    assert msg.startswith(f"fake{emu}: ") and msg.count(f"fake{emu}") == 1, msg
    assert "the stream broke after" in msg
    (rec,) = [r for r in d.session_records() if r.error_class == "MidStreamError"][-1:]
    assert rec.error_message.count(f"fake{emu}") == 1


def test_an_error_built_from_another_keeps_one_label() -> None:
    inner = ProtocolError("sent a stream event that is not JSON", vendor="fake")
    outer = MidStreamError(str(inner), vendor="fake", partial_text="so far")
    assert str(outer) == "fake: sent a stream event that is not JSON"
    again = ServerError(str(ServerError("boom", vendor="fake", status=500)), vendor="fake",
                        status=500)
    assert str(again) == "fake 500: boom"
    # Another vendor's label, or a name that only starts the same, is not ours: labelled.
    assert str(ServerError("fakeish: x", vendor="fake", status=502)) == "fake 502: fakeish: x"
