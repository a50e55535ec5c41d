"""Faithful emulators of the OpenAI, Anthropic, Gemini and Azure OpenAI APIs.

They stand in for the real vendors when no key is set (demo mode), in tests and in
notebooks on Binder: same paths, auth checks, error bodies and SSE framing as the real
APIs, synthetic text labelled as simulated, per-model pacing, and scriptable faults.

    with serve() as sim:
        sim.emulators["openai"].faults.script("429", None)
        print(sim.base_url("openai"))
"""

from ._core import FAULT_KINDS, PROFILES, Fault, FaultPlan, Generation, Profile, generate
from ._server import EMULATORS, Emulator, SimServer, make_emulator, serve

__all__ = [
    "EMULATORS",
    "FAULT_KINDS",
    "PROFILES",
    "Emulator",
    "Fault",
    "FaultPlan",
    "Generation",
    "Profile",
    "SimServer",
    "generate",
    "make_emulator",
    "serve",
]
