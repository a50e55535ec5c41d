"""The PostgreSQL ledger's schema: numbered, run-once migrations in `llmdispatch_migrations`.

The same columns as the SQLite `calls` table (`_migrations.py`), typed as PostgreSQL types
them, plus `user_name` (whose call it was: a team ledger groups by person). Tags are
`jsonb` with a GIN index, so "every call tagged X" is an index lookup on the server.
A unique index on (call_id, attempt, timestamp) makes a batch resent after a lost
acknowledgement a no-op (`ON CONFLICT DO NOTHING`): at least once in, exactly once kept.

Add a migration by appending with the next number; never edit one that has shipped.
They run under a transaction-scoped advisory lock, so two kernels opening a new database
at once do not both apply them.
"""

from __future__ import annotations

from typing import Any

from ._errors import LedgerError

# Each ledger column's PostgreSQL type (also the staging table's).
PG_COLUMNS: dict[str, str] = {
    "call_id": "text NOT NULL", "attempt": "integer NOT NULL",
    "timestamp": "double precision NOT NULL", "session": "text", "vendor": "text NOT NULL",
    "model_requested": "text NOT NULL", "model_served": "text", "status": "text NOT NULL",
    "error_class": "text", "error_message": "text", "http_status": "integer",
    "request_id": "text", "route_reason": "text", "retried": "boolean NOT NULL DEFAULT false",
    "fell_back": "boolean NOT NULL DEFAULT false", "streamed": "boolean NOT NULL DEFAULT false",
    "latency_s": "double precision", "ttft_s": "double precision", "input_tokens": "bigint",
    "output_tokens": "bigint", "cache_read_tokens": "bigint", "cache_write_tokens": "bigint",
    "reasoning_tokens": "bigint", "usage_source": "text", "cost_usd": "double precision",
    "price_source": "text", "cache_hit": "boolean NOT NULL DEFAULT false",
    "simulated": "boolean NOT NULL DEFAULT false", "finish_reason": "text",
    "cache_key": "text", "original_latency_s": "double precision", "repaired": "text",
    "schema_valid": "boolean", "tags": "jsonb", "params": "text", "prompt": "text",
    "response": "text", "chunks": "text", "user_name": "text NOT NULL",
}

MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "calls, by time, session, user and tag", f"""
CREATE TABLE calls (
    id bigserial PRIMARY KEY,
    {(',' + chr(10) + '    ').join(f'{name} {type_}' for name, type_ in PG_COLUMNS.items())}
);
CREATE UNIQUE INDEX calls_once ON calls (call_id, attempt, timestamp);
CREATE INDEX calls_by_time ON calls (timestamp);
CREATE INDEX calls_by_session ON calls (session, timestamp);
CREATE INDEX calls_by_user ON calls (user_name, timestamp);
CREATE INDEX calls_by_tag ON calls USING gin (tags);
"""),
]

_LOCK_KEY = 0x11D15BA7C4  # any constant: the advisory lock migrations run under


def migrate(conn: Any) -> None:
    """Bring the database to the newest schema (a psycopg connection, not in autocommit)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute("CREATE TABLE IF NOT EXISTS llmdispatch_migrations (number integer "
                     "PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL "
                     "DEFAULT now())")
        done = {r[0] for r in conn.execute("SELECT number FROM llmdispatch_migrations")}
        newest = max((n for n, _, _ in MIGRATIONS), default=0)
        if done and max(done) > newest:
            raise LedgerError(f"this PostgreSQL ledger has schema {max(done)}, newer than this "
                              f"llmdispatch-nb knows ({newest}): upgrade llmdispatch-nb")
        for number, name, sql in MIGRATIONS:
            if number not in done:
                conn.execute(sql)
                conn.execute("INSERT INTO llmdispatch_migrations (number, name) VALUES (%s, %s)",
                             (number, name))
