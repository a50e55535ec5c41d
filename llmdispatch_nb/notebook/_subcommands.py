"""`%llm SUBCOMMAND`: one `handle_<name>` per subcommand, each a thin read of the core.

The ledger analysis, budget and cache come from other floors; when this build lacks
one, the subcommand says so in one line instead of failing with a traceback.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._config import VENDOR_ALIASES, VENDORS
from ..errors import LLMDispatchError
from ._display import Table, fmt_cost
from ._errors import CellError, UsageError, describe
from ._parser import PLOTS, USAGE, Subcommand, expect, is_output_name

if TYPE_CHECKING:
    from ._magics import LLMMagics


def _show(obj: Any) -> None:
    from IPython.display import display

    display(obj)


def _dispatcher() -> Any:
    from ._magics import dispatcher

    return dispatcher()


def _analysis() -> Any:
    try:
        return importlib.import_module("llmdispatch_nb.analysis")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("llmdispatch_nb"):
            raise CellError("the ledger analysis (llmdispatch_nb.analysis) is not in this "
                            "build; the calls are still recorded in the dispatcher's ledger"
                            ) from None
        raise CellError(f"the ledger analysis needs {exc.name}: pip install {exc.name}") from None


def _need(obj: Any, name: str, what: str) -> Any:
    value = getattr(obj, name, None)
    if value is None:
        raise CellError(f"{what} is not available: this dispatcher has no .{name}")
    return value


# -- vendors and models --------------------------------------------------------------------


def handle_vendors(m: LLMMagics, sub: Subcommand) -> None:
    expect(sub, 0, "")
    d = _dispatcher()
    rows = []
    for name, ep in sorted(d.endpoints.items()):
        key = "not set" if ep.key is None else "demo key" if ep.simulated else "set"
        rows.append([name, ep.kind, key, "simulated" if ep.simulated else "real",
                     ep.default_model or "", ep.base_url])
    for name, spec in VENDORS.items():
        if name not in d.endpoints:
            needs = " or ".join(spec.key_variables if spec.kind != "compat"
                                else spec.base_url_variables)
            rows.append([name, spec.kind, "not set", "not configured", "", f"set {needs}"])
    title = ("demo mode: every vendor is emulated on this machine and answers are synthetic; "
             "set a vendor's API key to use the real one" if d.demo else
             "vendors in use (keys are never shown)")
    dotenv = getattr(d, "dotenv_path", None)
    # The catalogue's OpenAI-compatible providers: one waiting for a setting gets a row
    # naming it; the rest are counted, since a hundred rows would bury the five above.
    from .._config import environment
    from ..catalogue._providers import compatible, pending

    for name, missing in sorted(pending(environment(dotenv or False)).items()):
        if name not in d.endpoints:
            rows.append([name, "compat", "set", "not configured", "", f"set {' and '.join(missing)}"])
    more = [p for p in compatible() if p.id not in d.endpoints]
    title += f"; settings read from {dotenv}" if dotenv else "; no .env file read"
    title += (f"; {len(more)} more OpenAI-compatible providers turn on by their own key "
              f"(e.g. {', '.join(p.key_variables[0] for p in more[:3])}; "
              f"llmdispatch_nb.catalogue.providers() lists them)")
    _show(Table(["vendor", "kind", "key", "mode", "default model", "where"], rows, title))


def handle_models(m: LLMMagics, sub: Subcommand) -> None:
    """The models each vendor lists, with the catalogue's limits and capabilities and the
    list price, as a DataFrame (`-o NAME` keeps it in NAME for sorting and filtering)."""
    args = list(expect(sub, 3, "[VENDOR] [-o NAME]"))
    keep: str | None = None
    if "-o" in args:
        at = args.index("-o")
        if at + 1 >= len(args) or not is_output_name(args[at + 1]):
            raise UsageError("usage: %llm models [VENDOR] -o NAME (NAME: a Python name)")
        keep = args[at + 1]
        del args[at:at + 2]
    if len(args) > 1:
        raise UsageError("usage: %llm models [VENDOR] [-o NAME]")
    vendor = args[0] if args else None
    d = _dispatcher()
    if vendor is not None:
        name = vendor if vendor in d.endpoints else VENDOR_ALIASES.get(vendor, vendor)
        if name not in d.endpoints:
            raise UsageError(f"no vendor {vendor!r} is configured; vendors: "
                             f"{', '.join(sorted(d.endpoints)) or 'none'} (see %llm vendors)")
        names = [name]
    else:
        names = sorted(d.endpoints)
    from ._models_table import models_table

    frame = models_table(d, names, describe)
    if keep is not None and m.shell is not None:
        m.shell.user_ns[keep] = frame
    _show(frame)


# -- aliases -------------------------------------------------------------------------------


def handle_alias(m: LLMMagics, sub: Subcommand) -> None:
    args = expect(sub, 2, "[NAME TARGET]")
    d = _dispatcher()
    if not args:
        _show(Table(["alias", "target"], sorted(d.aliases.items())))
        return
    if len(args) != 2:
        raise UsageError("usage: %llm alias NAME TARGET, e.g. %llm alias fast openai:gpt-4o-mini")
    name, target = args
    if ":" in name or not name.strip():
        raise UsageError(f"an alias name cannot contain ':' ({name!r}); e.g. %llm alias fast "
                         "openai:gpt-4o-mini")
    if name in d.endpoints:
        raise UsageError(f"{name!r} is a vendor's name; pick another alias name")
    previous = d.aliases.get(name)
    d.aliases[name] = target
    try:
        d.resolver.resolve(name)  # the target exists, and the alias makes no loop
    except LLMDispatchError:
        if previous is None:
            del d.aliases[name]
        else:
            d.aliases[name] = previous
        raise
    print(f"alias {name} -> {target}")


def handle_unalias(m: LLMMagics, sub: Subcommand) -> None:
    (name,) = expect(sub, 1, "NAME", at_least=1)
    d = _dispatcher()
    if name not in d.aliases:
        raise UsageError(f"no alias {name!r}; aliases: {', '.join(sorted(d.aliases)) or 'none'}")
    del d.aliases[name]
    print(f"alias {name} removed")


# -- the ledger ----------------------------------------------------------------------------


def _calls(d: Any) -> Any:
    df = _analysis().calls(d)
    if len(df) == 0:
        raise CellError("no calls recorded yet: send a prompt with %%llm first")
    return df


def _keep_as(sub: Subcommand, at_most: int, usage: str) -> tuple[list[str], str | None]:
    """The subcommand's arguments without `-o NAME`, and NAME (the table is kept there:
    the notebook shows the curated columns, NAME holds every one)."""
    args = list(expect(sub, at_most + 2, usage))
    keep: str | None = None
    if "-o" in args:
        at = args.index("-o")
        if at + 1 >= len(args) or not is_output_name(args[at + 1]):
            raise UsageError(f"usage: %llm {sub.name} {usage} (NAME: a Python name)")
        keep = args[at + 1]
        del args[at:at + 2]
    if len(args) > at_most:
        raise UsageError(f"usage: %llm {sub.name} {usage}")
    return args, keep


def _show_kept(m: LLMMagics, table: Any, keep: str | None) -> None:
    if keep is not None and m.shell is not None:
        m.shell.user_ns[keep] = table
    _show(table)


def handle_stats(m: LLMMagics, sub: Subcommand) -> None:
    _, keep = _keep_as(sub, 0, "[-o NAME]")
    d = _dispatcher()
    stats = getattr(d, "stats", None)
    try:
        analysis = _analysis()
    except CellError:
        if not callable(stats):
            raise
        table = stats()  # no pandas view in this build: the core's own numbers
    else:
        table = analysis.summary(_calls(d))
    if table is None or len(table) == 0:
        raise CellError("no calls recorded yet: send a prompt with %%llm first")
    _show_kept(m, table, keep)


def handle_calls(m: LLMMagics, sub: Subcommand) -> None:
    args, keep = _keep_as(sub, 1, "[N] [-o NAME]")
    n = 10
    if args:
        try:
            n = int(args[0])
        except ValueError:
            raise UsageError(f"%llm calls N: N must be a whole number, got {args[0]!r}") from None
        if n < 1:
            raise UsageError("%llm calls N: N must be 1 or more")
    from ..analysis._tables import CallsTable

    _show_kept(m, CallsTable(_calls(_dispatcher()).tail(n)), keep)  # every column: .frame


_FIGURES = {"latency": "latency_figure", "ttft": "ttft_figure", "cost": "spend_figure",
            "tradeoff": "tradeoff_figure"}


def handle_plot(m: LLMMagics, sub: Subcommand) -> None:
    (kind,) = expect(sub, 1, "latency|ttft|cost|tradeoff", at_least=1)
    if kind not in PLOTS:
        raise UsageError(f"%llm plot {kind}: choose one of {', '.join(PLOTS)}")
    analysis = _analysis()
    figure = getattr(analysis, _FIGURES[kind], None)
    if figure is None:
        raise CellError(f"this build's analysis has no {_FIGURES[kind]}()")
    _show(figure(_calls(_dispatcher())))


# -- budget and cache ----------------------------------------------------------------------


def handle_budget(m: LLMMagics, sub: Subcommand) -> None:
    args = expect(sub, 1, "[AMOUNT]")
    d = _dispatcher()
    budget = _need(d, "budget", "a spending budget")
    if args:
        text = args[0].lstrip("$")
        if text.lower() in ("none", "off"):
            amount: float | None = None
        else:
            try:
                amount = float(text)
            except ValueError:
                raise UsageError(f"%llm budget AMOUNT: give US dollars, e.g. 5 or 0.50 "
                                 f"(or none), not {args[0]!r}") from None
            if amount < 0:
                raise UsageError("%llm budget AMOUNT: the amount must be 0 or more")
        budget.set_limit(amount)
    snapshot = budget.snapshot() if hasattr(budget, "snapshot") else {"*": {
        "limit": budget.limit_usd, "spent": budget.spent, "reserved": budget.reserved,
        "remaining": budget.remaining}}
    # Spending is kept for every tag seen (each magic cell tags its calls), so after a
    # sweep there may be hundreds: show the limited tags and the biggest spenders only.
    tags = [(scope, row) for scope, row in snapshot.items() if scope != "*"]
    limited = [t for t in tags if t[1].get("limit") is not None]
    others = sorted((t for t in tags if t[1].get("limit") is None),
                    key=lambda t: -((t[1].get("spent") or 0.0) + (t[1].get("reserved") or 0.0)))
    room = max(0, _BUDGET_TAG_ROWS - len(limited))
    shown, rest = limited + others[:room], others[room:]
    rows = [_budget_row("all calls", snapshot["*"])]
    rows += [_budget_row(f"tag {scope}", row) for scope, row in shown]
    if rest:
        rows.append([f"{len(rest)} more tags, no limit", "none",
                     fmt_cost(sum(r.get("spent") or 0.0 for _, r in rest)),
                     fmt_cost(sum(r.get("reserved") or 0.0 for _, r in rest)), "–"])
    _show(Table(["budget", "limit", "spent", "in flight", "remaining"], rows))


_BUDGET_TAG_ROWS = 10


def _budget_row(name: str, row: dict[str, Any]) -> list[str]:
    limit, left = row.get("limit"), row.get("remaining")
    return [name, "none" if limit is None else fmt_cost(limit), fmt_cost(row.get("spent")),
            fmt_cost(row.get("reserved")), "–" if left is None else fmt_cost(left)]


def handle_cache(m: LLMMagics, sub: Subcommand) -> None:
    (action,) = expect(sub, 1, "info|clear") or ("info",)
    if action not in ("info", "clear"):
        raise UsageError(f"%llm cache {action}: use %llm cache info or %llm cache clear")
    cache = _need(_dispatcher(), "cache", "the response cache")
    if action == "clear":
        removed = cache.clear()
        print("response cache cleared" + (f" ({removed} entries)" if isinstance(removed, int)
                                          else ""))
        return
    info = cache.info()
    items = info.items() if isinstance(info, dict) else vars(info).items()
    _show(Table(["cache", "value"], [[k, v] for k, v in items]))


# -- the magic itself ----------------------------------------------------------------------


def handle_config(m: LLMMagics, sub: Subcommand) -> None:
    expect(sub, 0, "")
    rows = []
    for name, trait in sorted(m.traits(config=True).items()):
        if name in ("config", "parent", "log"):
            continue
        rows.append([f"LLMMagics.{name}", repr(getattr(m, name)), trait.help.split(". ")[0]])
    d = _dispatcher()
    try:
        default = d.resolver.default()
    except LLMDispatchError as exc:
        default = f"none ({describe(exc)})"
    rows.append(["dispatcher default target", default, "used when a cell and the magic name none"])
    rows.append(["dispatcher mode", "demo (emulated vendors)" if d.demo else "real vendors", ""])
    rows.append(["vendors", ", ".join(sorted(d.endpoints)), "see %llm vendors"])
    rows.append(["aliases", str(len(d.aliases)), "see %llm alias"])
    _show(Table(["setting", "value", "what it does"], rows,
                "change with %config LLMMagics.<name> = value, or in ipython_config.py"))


def handle_chats(m: LLMMagics, sub: Subcommand) -> None:
    expect(sub, 0, "")
    if not len(m.chats):
        print("no chats yet: start one with %%llm --chat NAME")
        return
    rows = []
    for chat in m.chats.chats.values():
        sent = len(chat.history(m.chat_max_turns, m.chat_max_tokens)) // 2
        system = (chat.system or "")[:40]
        rows.append([chat.name, len(chat.turns), sent, f"~{chat.tokens}", chat.target or "",
                     system])
    _show(Table(["chat", "turns", "turns sent next", "tokens", "target", "system"], rows))


def handle_reset(m: LLMMagics, sub: Subcommand) -> None:
    args = expect(sub, 1, "[NAME]")
    if args:
        name = args[0]
        if name not in m.chats:
            known = ", ".join(sorted(m.chats.chats)) or "none"
            raise UsageError(f"no chat {name!r}; chats: {known}")
        m.chats.reset(name)
        print(f"chat {name} cleared")
        return
    gone = m.chats.reset()
    print(f"{len(gone)} chat(s) cleared" if gone else "no chats to clear")


def handle_panel(m: LLMMagics, sub: Subcommand) -> Any:
    expect(sub, 0, "")
    from .. import notebook

    panel = getattr(notebook, "panel", None)  # loads ipywidgets, if the build has a panel
    if panel is None:
        raise CellError("the widget panel is not in this build yet; use %%llm cells, "
                        "%llm stats and %llm plot meanwhile")
    shown = panel()
    if shown is not None:
        _show(shown)


def handle_batch(m: LLMMagics, sub: Subcommand) -> None:
    from ..batch._magic import handle

    handle(_dispatcher(), list(sub.args), m.shell.user_ns if m.shell is not None else None,
           UsageError, CellError, _show)


def handle_team(m: LLMMagics, sub: Subcommand) -> None:
    expect(sub, 0, "")
    from ._team import team_view

    for part in team_view(_dispatcher()):
        if isinstance(part, str):
            print(part)
        else:
            _show(part)


def handle_help(m: LLMMagics, sub: Subcommand) -> None:
    print(USAGE)


HANDLERS: dict[str, Callable[[LLMMagics, Subcommand], Any]] = {
    name[len("handle_"):]: fn for name, fn in globals().items()
    if name.startswith("handle_") and callable(fn)
}


def run_subcommand(m: LLMMagics, sub: Subcommand) -> None:
    HANDLERS[sub.name](m, sub)
