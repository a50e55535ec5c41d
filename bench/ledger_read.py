"""The ledger's read path, reader against reader: `python bench/ledger_read.py [--rows 1000000]`.

Each reader turns every row of one ledger file into the `analysis.calls()` frame, in a
fresh process of its own (import time measured apart), and reports the wall time of the
read and the process's peak resident memory (VmHWM). Readers run interleaved, in a new
order each round, so the machine's other load falls on all of them alike; each round's
time is also given as a ratio to the column blocks' time in that same round.

    blocks    today's column blocks (`Ledger.dataframe()` before issue 20)
    adbc      the ADBC SQLite driver into Arrow, then pandas (`bench/_arrow_frame.py`)
    duckdb    DuckDB's SQLite scanner into Arrow, then the same conversion
    polars    polars' `read_database_uri` (ConnectorX) into Arrow, the same conversion
    read_sql  plain sqlite3 + `pandas.read_sql` in chunks of 100,000 rows, then the same
    ledger    `analysis.calls()` as the package in this tree has it (whatever read path)

Every reader's frame is checked equal to the adbc reader's on a small file first
(`--check-rows`). `--path FILE` reuses a ledger file (built with the blocks if it is new).
`--blocks-tree DIR` takes "blocks" from another copy of the package (a snapshot of the
code before a change, say); "ledger" then reads a copy of the file, and its first read (an
upgrade rebuilding the blocks, if the format changed) is reported apart. Readers that are
not installed are reported and skipped; the kept readers need the packages listed in
`bench/_arrow_frame.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

READERS = ("blocks", "adbc", "duckdb", "polars", "read_sql", "ledger")

PROBE = r"""
import json, sys, time
from pathlib import Path
reader, path, out = sys.argv[1], sys.argv[2], sys.argv[3]
t0 = time.perf_counter()
import numpy, pandas
if reader not in ("blocks", "ledger"):  # today's path imports no pyarrow of its own
    import pyarrow
    from bench import _arrow_frame as _table
if reader == "adbc":
    import adbc_driver_sqlite.dbapi
elif reader == "duckdb":
    import duckdb, duckdb_extension_sqlite_scanner
elif reader == "polars":
    import polars, connectorx
elif reader in ("blocks", "ledger"):
    from llmdispatch_nb import analysis
    from llmdispatch_nb.ledger import Ledger
imports_s = time.perf_counter() - t0

def duckdb_table(path):
    ext = Path(duckdb_extension_sqlite_scanner.__file__).parent / "extensions"
    ext = next(ext.glob("*/sqlite_scanner.duckdb_extension"))
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{ext}'")
    cols = ", ".join(_table.SOURCE_COLUMNS)
    # Insertion order is kept (DuckDB's default), so rows come in the file's id order.
    return con.execute(f"SELECT {cols} FROM sqlite_scan(?, 'calls')", [path]).fetch_arrow_table()

def read_sql_table(path):
    import sqlite3
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    cols = ", ".join(_table.SOURCE_COLUMNS)
    parts = []
    for chunk in pandas.read_sql(f"SELECT {cols} FROM calls ORDER BY id", conn, chunksize=100_000):
        parts.append(pyarrow.Table.from_pandas(chunk, schema=schema, preserve_index=False))
    return pyarrow.concat_tables(parts)

if reader not in ("blocks", "ledger"):
    types = {"INTEGER": pyarrow.int64(), "REAL": pyarrow.float64(), "TEXT": pyarrow.string()}
    schema = pyarrow.schema([(src, types[_table._SQL_TYPE[t]])
                             for _, src, t in _table.FRAME_COLUMNS if src])
t, c = time.perf_counter(), time.process_time()
if reader == "blocks":
    df = Ledger(path).dataframe()
elif reader == "ledger":
    df = analysis.calls(Ledger(path))
else:
    if reader == "adbc":
        table = _table.read_table(path)
    elif reader == "duckdb":
        table = duckdb_table(path)
    elif reader == "polars":
        cols = ", ".join(_table.SOURCE_COLUMNS)
        table = polars.read_database_uri(f"SELECT {cols} FROM calls ORDER BY id",
                                         f"sqlite://{path}", engine="connectorx").to_arrow()
        table = table.cast(schema)  # polars' large strings and its own ints, as the others'
    elif reader == "read_sql":
        table = read_sql_table(path)
    df = _table.frame_from_table(table)
    del table
read_s, cpu_s = time.perf_counter() - t, time.process_time() - c
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
if out != "-":
    df.to_pickle(out)
print(json.dumps({"reader": reader, "rows": len(df), "read_s": read_s, "cpu_s": cpu_s,
                  "imports_s": imports_s, "peak_rss_mb": int(hwm.split()[1]) / 1024}))
"""


def probe(reader: str, path: Path, out: str = "-", tree: Path = ROOT) -> dict[str, Any]:
    # The probe imports llmdispatch_nb from `tree`: the current directory comes first.
    proc = subprocess.run([sys.executable, "-c", PROBE, reader, str(path), out],
                          capture_output=True, text=True, cwd=tree)
    if proc.returncode:
        return {"reader": reader, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def build(path: Path, rows: int) -> None:
    from bench.ledger_bench import build as build_ledger

    if not path.exists():
        took = build_ledger(path, rows)
        print(f"built {rows:,} rows in {took:.0f} s at {path}", flush=True)


def check(readers: list[str], path: Path, rows: int, trees: dict[str, Path]) -> list[str]:
    """Readers whose frame equals the adbc reader's on a small file; the others reported."""
    import pandas as pd

    build(path, rows)
    frames: dict[str, Any] = {}
    ok = []
    for reader in readers:
        out = str(path.with_suffix(f".{reader}.pkl"))
        r = probe(reader, path, out, trees.get(reader, ROOT))
        if "error" in r:
            print(f"  {reader:<8} skipped: {r['error']}")
            continue
        frames[reader] = pd.read_pickle(out)
        os.unlink(out)
        ok.append(reader)
    base = frames.get("adbc")
    for reader in ok:
        if base is None or reader == "adbc":
            continue
        common = [c for c in base.columns if c in frames[reader].columns]
        try:
            pd.testing.assert_frame_equal(frames[reader][common], base[common])
            missing = sorted(set(base.columns) - set(common))
            print(f"  {reader:<8} same frame as adbc" + (f" (lacks {missing})" if missing else ""))
        except AssertionError as exc:
            print(f"  {reader:<8} DIFFERS from adbc: {str(exc).splitlines()[0]}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--path", type=Path, default=None, help="a ledger file to read (kept)")
    parser.add_argument("--check-rows", type=int, default=20_000)
    parser.add_argument("--readers", nargs="*", default=list(READERS), choices=READERS)
    parser.add_argument("--blocks-tree", type=Path, default=None,
                        help="the llmdispatch-nb tree the blocks reader runs (default: this one)")
    args = parser.parse_args()
    import shutil
    import tempfile

    trees = {"blocks": args.blocks_tree.absolute()} if args.blocks_tree else {}

    with tempfile.TemporaryDirectory() as tmp:
        print(f"checking each reader's frame on {args.check_rows:,} rows:", flush=True)
        readers = check(args.readers, Path(tmp) / "check.db", args.check_rows, trees)
        path = args.path or Path(tmp) / "big.db"
        build(path, args.rows)
        paths = {reader: path for reader in readers}
        if trees and "ledger" in readers:
            # Two versions of the code would rebuild each other's blocks: each its own copy.
            paths["ledger"] = Path(tmp) / "now.db"
            shutil.copyfile(path, paths["ledger"])
            first = probe("ledger", paths["ledger"])
            print(f"ledger's first read of a copy of the file (upgrades blocks of an older "
                  f"format): {first.get('read_s', 0):.2f} s ({first.get('cpu_s', 0):.2f} CPU)"
                  f"{first.get('error', '')}", flush=True)
        results: dict[str, list[dict[str, Any]]] = {r: [] for r in readers}
        loads = []
        for n in range(args.rounds):
            order = readers[:]
            random.Random(n).shuffle(order)
            loads.append(os.getloadavg()[0])
            this_round = {}
            for reader in order:
                r = probe(reader, paths[reader], "-", trees.get(reader, ROOT))
                if "error" in r:
                    print(f"round {n + 1}: {reader} failed: {r['error']}")
                    continue
                this_round[reader] = r
            for reader, r in this_round.items():
                if "blocks" in this_round:
                    r["ratio"] = r["read_s"] / this_round["blocks"]["read_s"]
                    r["cpu_ratio"] = r["cpu_s"] / this_round["blocks"]["cpu_s"]
                results[reader].append(r)
            print(f"round {n + 1} (load {loads[-1]:.1f}): " + ", ".join(
                f"{k} {v['read_s']:.2f}s ({v['cpu_s']:.2f} CPU)/{v['peak_rss_mb']:.0f}MB"
                for k, v in this_round.items()), flush=True)
    rows = next((rs[0]["rows"] for rs in results.values() if rs), 0)
    print(f"\n{rows:,} rows, {args.rounds} interleaved rounds, fresh process per read; "
          f"load average {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores")
    print(f"{'reader':<9} {'read s median (min-max)':<26} {'x blocks median (min-max)':<27} "
          f"{'CPU s median':<13} {'CPU x blocks':<13} {'peak RSS MB median (max)':<25} imports s")
    for reader, rs in results.items():
        if not rs:
            continue
        t = [r["read_s"] for r in rs]
        m = [r["peak_rss_mb"] for r in rs]
        ratios = [r["ratio"] for r in rs if "ratio" in r]
        ratio = (f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
                 if ratios else "-")
        cpu = statistics.median(r["cpu_s"] for r in rs)
        cpu_ratios = [r["cpu_ratio"] for r in rs if "cpu_ratio" in r]
        cpu_ratio = f"{statistics.median(cpu_ratios):.2f}" if cpu_ratios else "-"
        print(f"{reader:<9} {statistics.median(t):5.2f} ({min(t):.2f}-{max(t):.2f}){'':<10} "
              f"{ratio:<27} {cpu:<13.2f} {cpu_ratio:<13} "
              f"{statistics.median(m):5.0f} ({max(m):.0f}){'':<13} "
              f"{statistics.median(r['imports_s'] for r in rs):.2f}")


if __name__ == "__main__":
    main()
