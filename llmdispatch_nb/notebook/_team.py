"""`%llm team`: the team's spend and calls per user, vendor and model (summed by the
PostgreSQL ledger's server), and the shared budget's state (read from Redis).

Where either is not configured it says so, and which variable sets it up, rather than
showing this kernel's own figures as if they were the team's.
"""

from __future__ import annotations

from typing import Any

from ._display import Table, fmt_cost

_ROWS = 50  # the biggest spenders; the rest summed in one row

NO_LEDGER = ("no team ledger: this kernel records to its own SQLite file. Set "
             "LLMDISPATCH_LEDGER=postgresql://user@host/db (pip install 'psycopg[binary]') "
             "in every kernel of the team to see its spend here")
NO_STATE = ("no shared budget: this kernel's budget is its own. Set "
            "LLMDISPATCH_STATE=redis://host:6379/0 and LLMDISPATCH_TEAM=NAME (pip install "
            "redis) to share limits, breakers and budget")


def spend_table(ledger: Any) -> Table | str:
    """Calls, attempts and cost per user, vendor and model from a team ledger."""
    from ..ledger._postgres import PostgresLedger

    if not isinstance(ledger, PostgresLedger):
        return NO_LEDGER
    rows = ledger.spend()
    if not rows:
        return f"the team ledger at {ledger.url} holds no calls yet"
    shown, rest = rows[:_ROWS], rows[_ROWS:]
    out = [[r["user"], r["vendor"], r["model"], r["calls"], r["attempts"],
            r["calls"] - r["successes"] if r["successes"] <= r["calls"] else 0,
            fmt_cost(r["cost_usd"])] for r in shown]
    if rest:
        out.append([f"{len(rest)} more", "", "", sum(r["calls"] for r in rest),
                    sum(r["attempts"] for r in rest), "",
                    fmt_cost(sum(r["cost_usd"] for r in rest))])
    out.append(["all", "", "", sum(r["calls"] for r in rows), sum(r["attempts"] for r in rows),
                "", fmt_cost(sum(r["cost_usd"] for r in rows))])
    return Table(["user", "vendor", "model", "calls", "attempts", "unanswered", "cost"], out,
                 title=f"team spend ({ledger.url})")


def budget_table(budget: Any) -> Table | str:
    """The team's accounts: the whole budget, each user and each tag seen."""
    shared = getattr(budget, "shared", None)
    if shared is None:
        return NO_STATE
    scopes = shared.scopes_seen() or ["*"]
    read = shared.read(scopes)
    if read is None:
        return (f"the shared budget in Redis at {shared.state.url} cannot be read now "
                f"(policy: {shared.state.unreachable})")
    limits: dict[str, float | None] = {"*": budget.limit_usd}
    limits.update({f"tag:{t}": v for t, v in budget.tag_limits().items()})
    if shared.state.user_limit_usd is not None:
        limits[f"user:{shared.state.user}"] = shared.state.user_limit_usd
    rows = []
    for scope in sorted(read, key=lambda s: (s != "*", not s.startswith("user:"), s)):
        spent, held = (v / 1e9 for v in read[scope])
        limit = limits.get(scope)
        name = "the team" if scope == "*" else scope.replace(":", " ", 1)
        rows.append([name, "none" if limit is None else fmt_cost(limit), fmt_cost(spent),
                     fmt_cost(held), "–" if limit is None else fmt_cost(limit - spent - held)])
    return Table(["budget", "limit", "spent", "in flight", "remaining"], rows,
                 title=f"shared budget of team {shared.state.team!r} (limits as this kernel "
                       f"sets them)")


def team_view(dispatcher: Any) -> list[Table | str]:
    """What `%llm team` shows: the spend table (or why not), then the budget's."""
    return [spend_table(getattr(dispatcher, "ledger", None)),
            budget_table(getattr(dispatcher, "budget", None))]
