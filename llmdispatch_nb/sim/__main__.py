"""`python -m llmdispatch_nb.sim`: serve all four emulators on loopback until interrupted.

Prints one line per vendor, `<vendor> <base_url>`, then waits.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading

from .._config import sim_time_scale
from ..errors import ConfigurationError
from . import serve


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m llmdispatch_nb.sim", description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--time-scale", type=float, default=None,
                    help="multiply every emulated delay (0 = instant; default "
                         "$LLMDISPATCH_SIM_TIME_SCALE, else 1)")
    ap.add_argument("--api-key", default=None, help="require this key (default: any non-empty key)")
    args = ap.parse_args()
    try:
        scale = sim_time_scale(args.time_scale, os.environ)
    except ConfigurationError as exc:
        ap.error(str(exc))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with serve(host=args.host, time_scale=scale, api_key=args.api_key) as sim:
        for vendor in sim.emulators:
            print(vendor, sim.base_url(vendor), flush=True)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
