"""The widget panel: write a prompt, pick targets, Send or Compare, watch the answers stream
side by side, then read the ledger in the Stats and Charts tabs.

    from llmdispatch_nb.notebook import panel
    panel()                      # the process-wide dispatcher (emulators when no keys)

`Panel` is a plain class with explicit state (`idle` -> `running` -> [`cancelling`] ->
`idle`) that owns its widgets; the button handlers are ordinary methods, so tests drive it
without a browser. Calls run on the dispatcher's loop; one worker thread per column drains
its stream and one supervisor thread renders all columns at most ~10 times a second, so
the kernel thread only ever starts work and returns (the UI never freezes). While a run is
in flight Send and Compare are disabled, and a click that arrives anyway (the browser may
not have seen the disabled state yet) is counted in `ignored_clicks` and does nothing.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import ipywidgets as widgets

from .._config import VENDORS
from .._dispatcher import Dispatcher
from .._stream import Stream
from .._types import REASONING_LEVELS
from ._errors import CellError
from ._panel_column import Column
from ._panel_ledger import LedgerView
from ._structured_view import cell_extras

__all__ = ["Panel", "PanelState", "TargetChoice", "panel", "target_choices"]

PanelState = Literal["idle", "running", "cancelling"]

# Seconds between two renders of one column (about ten updates a second).
RENDER_INTERVAL = 0.1
# Seconds between two refreshes of the Stats tab while calls keep finishing.
STATS_INTERVAL = 0.5


@dataclass(frozen=True)
class TargetChoice:
    """One line of the target picker. Never holds the key: only whether there is one."""

    target: str  # vendor:model
    vendor: str
    has_key: bool
    simulated: bool
    configured: bool = True
    key_variable: str | None = None

    @property
    def label(self) -> str:
        if not self.configured:
            var = f" (set {self.key_variable})" if self.key_variable else ""
            return f"{self.target} · no key{var}"
        if self.simulated:  # an emulator's key is a placeholder: not worth a word
            return f"{self.target} · simulated"
        return f"{self.target} · {'key set' if self.has_key else 'no key'}"


def target_choices(dispatcher: Dispatcher) -> list[TargetChoice]:
    """Every model of every configured vendor, then the known vendors with no key yet."""
    out: list[TargetChoice] = []
    for name, ep in dispatcher.endpoints.items():
        models = list(ep.models) or list(ep.deployments)
        if ep.default_model:  # the vendor's default first: the likeliest pick
            models = [ep.default_model] + [m for m in models if m != ep.default_model]
        for model in models:
            out.append(TargetChoice(f"{name}:{model}", name, ep.key is not None, ep.simulated))
    for name, spec in VENDORS.items():
        # A vendor without a default model (Azure, local servers) has nothing to offer
        # until the user configures it; the others are listed so they can be found.
        if name in dispatcher.endpoints or not spec.default_model:
            continue
        out.append(TargetChoice(f"{name}:{spec.default_model}", name, False, False,
                                configured=False, key_variable=spec.key_variables[0]))
    return out


def _strategies() -> tuple[str, ...]:
    for module in ("llmdispatch_nb.routing", "llmdispatch_nb.routing._strategies"):
        try:
            found = getattr(importlib.import_module(module), "STRATEGIES", None)
        except ImportError:
            continue
        if found:
            return tuple(found)
    return ("model", "cheapest", "fastest")


@dataclass(frozen=True)
class RunSettings:
    """What a run sends, read from the controls when the button is clicked."""

    prompt: str
    system: str | None
    temperature: float
    max_tokens: int
    strategy: str | None
    repeat: int
    max_cost: float | None
    reasoning: str | None = None  # None: the model's default
    # As %%llm's --schema / --tool / --image: names in the notebook, paths (read at click)
    schema: str | None = None
    tools: tuple[str, ...] = ()
    images: tuple[str, ...] = ()

    def call_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"system": self.system, "temperature": self.temperature,
                                  "max_tokens": self.max_tokens, "tags": ("panel",)}
        if self.reasoning:
            params["reasoning"] = self.reasoning
        if self.strategy:
            params["strategy"] = self.strategy
        if self.max_cost:
            params["max_cost"] = self.max_cost
        return params


class Panel:
    """The panel's state, widgets and handlers. Display it as the last line of a cell."""

    def __init__(self, dispatcher: Dispatcher | None = None, *,
                 render_interval: float = RENDER_INTERVAL) -> None:
        if dispatcher is None:
            import llmdispatch_nb

            dispatcher = llmdispatch_nb.default()
        self.dispatcher = dispatcher
        self.render_interval = render_interval
        self.state: PanelState = "idle"
        self.columns: list[Column] = []
        self.ignored_clicks = 0
        self.runs = 0
        self._lock = threading.RLock()
        self._idle = threading.Event()
        self._idle.set()
        self._wake = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._extras: tuple[dict[str, Any], list[Any]] = ({}, [])
        self.choices = target_choices(dispatcher)
        self._simulated = {c.target: c.simulated for c in self.choices}
        self._build()

    # -- widgets ------------------------------------------------------------------------

    def _build(self) -> None:
        full = widgets.Layout(width="100%")
        wide = {"description_width": "90px"}
        self.prompt = widgets.Textarea(placeholder="Prompt", rows=4, layout=full)
        self.prompt.add_class("llmd-prompt")
        self.system = widgets.Textarea(placeholder="System prompt (optional)", rows=2, layout=full)
        self.system.add_class("llmd-system")
        # What %%llm's --schema, --tool and --image take: names from the notebook, paths.
        self.schema = widgets.Text(placeholder="Schema: a pydantic model, dataclass, TypedDict "
                                   "or dict in the notebook (optional)", layout=full)
        self.schema.add_class("llmd-schema")
        self.tools = widgets.Text(placeholder="Tools: function names, comma-separated (optional)",
                                  layout=full)
        self.tools.add_class("llmd-tools")
        self.images = widgets.Text(placeholder="Images: paths, comma-separated (optional)",
                                   layout=full)
        self.images.add_class("llmd-images")
        options = [(c.label, c.target) for c in self.choices]
        self.targets = widgets.SelectMultiple(
            options=options, value=self._initial_selection(), rows=min(10, max(3, len(options))),
            description="Targets", layout=widgets.Layout(width="auto", min_width="340px"))
        self.targets.add_class("llmd-targets")
        self.temperature = widgets.FloatSlider(value=1.0, min=0.0, max=2.0, step=0.1,
                                               description="Temperature", style=wide)
        self.max_tokens = widgets.BoundedIntText(value=512, min=1, max=1_000_000,
                                                 description="Max tokens", style=wide)
        self.strategy = widgets.Dropdown(
            options=[("dispatcher default", "")] + [(s, s) for s in _strategies()],
            value="", description="Strategy", style=wide)
        self.repeat = widgets.BoundedIntText(value=1, min=1, max=50, description="Repeat", style=wide)
        # How hard a reasoning model thinks (ignored, with a warning, by one that does not).
        self.reasoning = widgets.Dropdown(
            options=[("model default", "")] + [(r, r) for r in REASONING_LEVELS],
            value="", description="Reasoning", style=wide)
        self.max_cost = widgets.BoundedFloatText(value=0.0, min=0.0, max=1_000.0, step=0.01,
                                                 description="Max cost $", style=wide,
                                                 tooltip="US dollars per call; 0 = no limit")
        # "Max cost $ 0" read as "spend nothing": say what 0 means, beside the box.
        self.max_cost_note = widgets.HTML(self._max_cost_text(0.0))
        self.max_cost.observe(
            lambda change: setattr(self.max_cost_note, "value", self._max_cost_text(change["new"])),
            names="value")
        self.send_button = widgets.Button(description="Send", button_style="primary", icon="play",
                                          tooltip="Send to the first selected target")
        self.compare_button = widgets.Button(description="Compare", button_style="info",
                                             icon="columns", tooltip="Send to every selected target")
        self.cancel_all_button = widgets.Button(description="Cancel all", button_style="warning",
                                                icon="stop", disabled=True)
        for button, name in ((self.send_button, "send"), (self.compare_button, "compare"),
                             (self.cancel_all_button, "cancel-all")):
            button.add_class(f"llmd-{name}")
        self.send_button.on_click(self.on_send)
        self.compare_button.on_click(self.on_compare)
        self.cancel_all_button.on_click(self.on_cancel_all)
        self.status = widgets.HTML(self._status_html("ready"))
        self.status.add_class("llmd-status")
        self.columns_box = widgets.HBox(layout=widgets.Layout(flex_flow="row wrap", width="100%"))
        self.columns_box.add_class("llmd-columns")

        controls = widgets.VBox([self.temperature, self.max_tokens, self.reasoning, self.strategy,
                                 self.repeat, widgets.HBox([self.max_cost, self.max_cost_note])])
        compose = widgets.VBox([
            widgets.HBox([widgets.VBox([self.prompt, self.system, self.schema, self.tools,
                                        self.images],
                                       layout=widgets.Layout(flex="1 1 0")),
                          self.targets, controls]),
            widgets.HBox([self.send_button, self.compare_button, self.cancel_all_button,
                          self.status], layout=widgets.Layout(align_items="center")),
            self.columns_box,
        ])
        self.ledger = LedgerView(self.dispatcher)
        self.tabs = widgets.Tab(children=[compose, self.ledger.stats_tab, self.ledger.charts_tab],
                                titles=("Compose", "Stats", "Charts"))
        self.tabs.observe(self._on_tab, names="selected_index")
        header = widgets.HTML(self._header_html())
        self.widget = widgets.VBox([header, self.tabs])
        self.widget.add_class("llmd-panel")

    def _initial_selection(self) -> tuple[str, ...]:
        try:
            default = self.dispatcher.resolver.default()
        except Exception:
            default = None
        known = [c.target for c in self.choices if c.configured]
        if default in known:
            return (str(default),)
        return tuple(known[:1])

    def _header_html(self) -> str:
        mode = (" · <span style='color:#8d6e00'>demo mode: vendors are emulated, answers are "
                "synthetic</span>") if getattr(self.dispatcher, "demo", False) else ""
        return f"<b>llmdispatch</b>{mode}"

    @staticmethod
    def _status_html(text: str, colour: str = "#444") -> str:
        import html

        return f"<span style='color:{colour};margin-left:8px'>{html.escape(text)}</span>"

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    # -- handlers (the kernel thread calls these; each returns at once) ------------------

    def on_send(self, _button: Any = None) -> bool:
        """Send the prompt to the first selected target. Returns whether a run started."""
        return self._start(list(self.targets.value)[:1])

    def on_compare(self, _button: Any = None) -> bool:
        """Send the prompt to every selected target, side by side."""
        return self._start(list(self.targets.value))

    def on_cancel_all(self, _button: Any = None) -> None:
        with self._lock:
            if self.state != "running":
                return
            self.state = "cancelling"
            columns = list(self.columns)
            self.cancel_all_button.disabled = True
            self.status.value = self._status_html("cancelling…", "#8d6e00")
        for column in columns:
            column.cancel()
        self._wake.set()

    def settings(self) -> RunSettings:
        return RunSettings(
            prompt=self.prompt.value, system=self.system.value.strip() or None,
            temperature=float(self.temperature.value), max_tokens=int(self.max_tokens.value),
            strategy=self.strategy.value or None, repeat=int(self.repeat.value),
            max_cost=float(self.max_cost.value) or None, reasoning=self.reasoning.value or None,
            schema=self.schema.value.strip() or None, tools=_names(self.tools.value),
            images=_names(self.images.value))

    def _start(self, targets: Sequence[str]) -> bool:
        with self._lock:
            if self.state != "idle":
                self.ignored_clicks += 1
                return False
            settings = self.settings()
            if not settings.prompt.strip():
                self.status.value = self._status_html("write a prompt first", "#b00020")
                return False
            if not targets:
                self.status.value = self._status_html("pick at least one target", "#b00020")
                return False
            try:  # a schema or tool name the notebook lacks, an image that is not one
                self._extras = _read_extras(settings)
            except CellError as exc:
                self.status.value = self._status_html(exc.line, "#b00020")
                return False
            self.state = "running"
            self._idle.clear()
            self.runs += 1
            self.send_button.disabled = True
            self.compare_button.disabled = True
            self.cancel_all_button.disabled = False
            columns = [Column(t, repeat=settings.repeat, simulated=self._simulated.get(t, False),
                              min_interval=self.render_interval) for t in targets]
            previous, self.columns = self.columns, columns
            self.columns_box.children = tuple(c.box for c in columns)
            for old in previous:  # the last run's widgets would otherwise live on in the kernel
                _close_tree(old.box)
            calls = len(columns) * settings.repeat
            self.status.value = self._status_html(
                f"running {calls} call{'s' if calls != 1 else ''}…", "#1565c0")
            self._wake.clear()
            self._supervisor = threading.Thread(
                target=self._supervise, args=(columns, settings), name="llmdispatch-panel",
                daemon=True)
            self._supervisor.start()
            return True

    # -- the run (supervisor thread) -----------------------------------------------------

    def _supervise(self, columns: list[Column], settings: RunSettings) -> None:
        try:
            extras, attached = self._extras
            params = {**settings.call_params(), **extras}
            prompt: Any = [settings.prompt, *attached] if attached else settings.prompt

            def start(target: str) -> Stream:
                return self.dispatcher.stream(prompt, target, **params)

            def work(column: Column) -> None:
                try:
                    column.consume(start)
                finally:
                    self._wake.set()

            workers = [threading.Thread(target=work, args=(c,), name=f"llmdispatch-panel-{c.target}",
                                        daemon=True) for c in columns]
            for w in workers:
                w.start()
            seen_final: set[int] = set()
            last_stats = float("-inf")
            while any(w.is_alive() for w in workers):
                self._wake.wait(self.render_interval)
                self._wake.clear()
                now = time.perf_counter()
                for c in columns:
                    c.render(now)
                newly = {i for i, c in enumerate(columns) if c.finished} - seen_final
                if newly and now - last_stats >= STATS_INTERVAL:
                    seen_final |= newly
                    last_stats = now
                    self.ledger.refresh_stats()
            for w in workers:
                w.join()
            for c in columns:
                c.render(force=True)
            self.ledger.refresh_stats()
            if self.tabs.selected_index == 2:
                self.ledger.refresh_charts()
        finally:
            self._finish(columns)

    def _finish(self, columns: Iterable[Column]) -> None:
        counts: dict[str, int] = {}
        for c in columns:
            counts[c.status] = counts.get(c.status, 0) + 1
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        with self._lock:
            self.state = "idle"
            self.send_button.disabled = False
            self.compare_button.disabled = False
            self.cancel_all_button.disabled = True
            colour = "#b00020" if counts.get("error") else "#2e7d32"
            self.status.value = self._status_html(f"finished: {summary}", colour)
            self._idle.set()

    @staticmethod
    def _max_cost_text(usd: float) -> str:
        return ("<span style='opacity:.7'>no limit</span>" if not usd
                else "<span style='opacity:.7'>per call</span>")

    def _on_tab(self, change: dict[str, Any]) -> None:
        if change.get("new") == 1:
            self.ledger.refresh_stats()
        elif change.get("new") == 2:
            self.ledger.refresh_charts()

    # -- for callers and tests -----------------------------------------------------------

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the panel is idle again; False if `timeout` seconds ran out first."""
        return self._idle.wait(timeout)

    def close(self) -> None:
        """Cancel what runs and close the widgets (the dispatcher stays open)."""
        self.on_cancel_all()
        self.wait(10)
        _close_tree(self.widget)

    def __repr__(self) -> str:
        return f"<llmdispatch panel: {self.state}, {len(self.columns)} columns>"


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def _read_extras(settings: RunSettings) -> tuple[dict[str, Any], list[Any]]:
    """The schema, tools and images the fields name, read from the notebook's namespace."""
    from IPython import get_ipython

    shell = get_ipython()
    return cell_extras(settings.schema, settings.tools, settings.images,
                       shell.user_ns if shell is not None else {})


def _close_tree(widget: widgets.Widget) -> None:
    for child in getattr(widget, "children", ()):
        _close_tree(child)
    widget.close()


def panel(dispatcher: Dispatcher | None = None) -> Panel:
    """A widget panel on `dispatcher` (default: `llmdispatch_nb.default()`)."""
    return Panel(dispatcher)
