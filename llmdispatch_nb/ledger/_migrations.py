"""Numbered, run-once schema migrations, recorded in the `migrations` table.

Add a migration by appending to MIGRATIONS with the next number; never edit one that has
shipped. They run inside one `BEGIN IMMEDIATE` transaction, so two kernels opening the
same new file at once do not both apply them.
"""

from __future__ import annotations

import sqlite3
import time

from ._errors import LedgerError

MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "calls, call blocks and response cache", """
CREATE TABLE calls (
    id INTEGER PRIMARY KEY,
    call_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    timestamp REAL NOT NULL,
    session TEXT,
    vendor TEXT NOT NULL,
    model_requested TEXT NOT NULL,
    model_served TEXT,
    status TEXT NOT NULL,
    error_class TEXT,
    error_message TEXT,
    http_status INTEGER,
    request_id TEXT,
    route_reason TEXT,
    retried INTEGER NOT NULL DEFAULT 0,
    fell_back INTEGER NOT NULL DEFAULT 0,
    streamed INTEGER NOT NULL DEFAULT 0,
    latency_s REAL,
    ttft_s REAL,
    input_tokens INTEGER,
    output_tokens INTEGER,
    cache_read_tokens INTEGER,
    cache_write_tokens INTEGER,
    reasoning_tokens INTEGER,
    usage_source TEXT,
    cost_usd REAL,
    price_source TEXT,
    cache_hit INTEGER NOT NULL DEFAULT 0,
    simulated INTEGER NOT NULL DEFAULT 0,
    finish_reason TEXT,
    cache_key TEXT,
    tags TEXT,      -- JSON array
    params TEXT,    -- JSON object
    prompt TEXT,    -- full text, 'sha256:<hex>', or NULL, by the text-storage setting
    response TEXT,
    chunks TEXT     -- JSON [[seconds since send, text], ...] of a streamed answer
);
CREATE INDEX calls_by_time ON calls(timestamp);
CREATE INDEX calls_by_session ON calls(session, timestamp);

-- The analysis columns again, packed column by column in blocks of rows, written in the
-- same transaction as the rows: reading a million rows one Python object at a time takes
-- many seconds, reading a few blobs takes milliseconds. Any change to `calls` made behind
-- the ledger's back drops the blocks, and the next read rebuilds them from the rows.
CREATE TABLE call_blocks (
    id INTEGER PRIMARY KEY,
    n INTEGER NOT NULL,
    first_id INTEGER NOT NULL,
    last_id INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE TRIGGER calls_deleted AFTER DELETE ON calls BEGIN DELETE FROM call_blocks; END;
CREATE TRIGGER calls_updated AFTER UPDATE ON calls BEGIN DELETE FROM call_blocks; END;

CREATE TABLE cache (
    key TEXT PRIMARY KEY,
    created REAL NOT NULL,
    vendor TEXT,
    model TEXT,
    answer TEXT NOT NULL   -- JSON: text, finish reason, usage, served model, timing, chunks
);
CREATE INDEX cache_by_created ON cache(created);
"""),
    (2, "a hit's original latency; what the ledger repaired to store a record", """
ALTER TABLE calls ADD COLUMN original_latency_s REAL;
ALTER TABLE calls ADD COLUMN repaired TEXT;
"""),
    (3, "whether a structured answer fit its schema", """
ALTER TABLE calls ADD COLUMN schema_valid INTEGER;  -- 1 / 0, NULL when no schema was asked for
"""),
    (4, "batch jobs: the vendors' batch engines, stored the moment one is submitted", """
CREATE TABLE batch_jobs (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    session TEXT,
    name TEXT,
    state TEXT NOT NULL,     -- running | ended | collected | cancelled
    items TEXT NOT NULL,     -- JSON: every request (custom id, target, body, grid cell), written once
    parts TEXT NOT NULL,     -- JSON: each vendor batch (ids, files, status, counts), updated
    updated REAL NOT NULL
);
CREATE INDEX batch_jobs_by_created ON batch_jobs(created);
"""),
]


def applied(conn: sqlite3.Connection) -> list[int]:
    rows = conn.execute("SELECT number FROM migrations ORDER BY number").fetchall()
    return [r[0] for r in rows]


def migrate(conn: sqlite3.Connection) -> list[int]:
    """Apply the migrations this database lacks; return the numbers applied now.

    `conn` must be in autocommit mode (isolation_level=None): the transaction is ours.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS migrations ("
                     "number INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)")
        done = set(applied(conn))
        newest = max((n for n, _, _ in MIGRATIONS), default=0)
        if done and max(done) > newest:
            raise LedgerError(
                f"this ledger was written by a newer llmdispatch-nb (schema {max(done)}, "
                f"this one knows up to {newest}); upgrade llmdispatch-nb to use it")
        now_applied = []
        for number, name, sql in MIGRATIONS:
            if number in done:
                continue
            for statement in _statements(sql):
                conn.execute(statement)
            conn.execute("INSERT INTO migrations(number, name, applied_at) VALUES (?, ?, ?)",
                         (number, name, time.time()))
            now_applied.append(number)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return now_applied


def _statements(sql: str) -> list[str]:
    """Split a script into statements (executescript would commit our transaction)."""
    out: list[str] = []
    buf = ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return [s for s in out if s]
