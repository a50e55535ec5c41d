"""`%llm models`: the models each vendor lists, with the model catalogue's limits and
capabilities and the list price, as a curated DataFrame (every column stays a column, so
`-o NAME` gives a frame to sort and filter: `NAME.sort_values("price out /1M")`).

Its plain-text view shows every column unabridged (pandas would elide the middle ones
in a terminal's width), since the model names and the notes are what a reader wants.
Imported only when the subcommand runs: it imports pandas.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..analysis._tables import CuratedTable

COLUMNS = (
    ("vendor", "vendor", "text"), ("model", "model", "text"), ("context", "context", "int"),
    ("output cap", "output cap", "int"), ("reasoning", "reasoning", "text"),
    ("tools", "tools", "text"), ("structured output", "structured output", "text"),
    ("images", "images", "text"), ("price in /1M", "price in /1M", "dollars"),
    ("price out /1M", "price out /1M", "dollars"), ("released", "released", "text"),
    ("note", "note", "text"),
)

# ModelInfo field -> column; an unknown model's cells are left empty, not defaulted.
FIELDS = (("context_window", "context"), ("max_output_tokens", "output cap"),
          ("reasoning", "reasoning"), ("tools", "tools"),
          ("structured_output", "structured output"), ("images", "images"),
          ("release_date", "released"))


class ModelsTable(CuratedTable):
    COLUMNS = COLUMNS
    CAPTION = "the catalogue's figures (models.dev); prices per million tokens"

    def __repr__(self) -> str:
        return self.text()


def models_table(d: Any, names: list[str], describe: Any) -> ModelsTable:
    """Rows for each vendor in `names` of dispatcher `d`: what the vendor lists (its own
    models endpoint; on error the endpoint's known models and the error in the note)."""
    from ..catalogue import lookup
    from ..errors import LLMDispatchError
    from ..routing import Candidate, pricing_model
    from ..routing._groups import catalogue_vendor

    rows: list[dict[str, Any]] = []
    for name in names:
        ep = d.endpoints[name]
        note = ""
        try:
            models = d.models(name)
        except LLMDispatchError as exc:
            models, note = list(ep.models), f"error: {describe(exc)}"
        if not models:
            rows.append({"vendor": name, "model": None, "note": note or "lists no models"})
        for model in models:
            cand = Candidate(ep, model)
            info = lookup(catalogue_vendor(cand), pricing_model(cand), warn=False)
            price = d.prices.price_of(name, pricing_model(cand), kind=ep.kind, free=not ep.priced)
            row: dict[str, Any] = {"vendor": name, "model": model}
            row.update({col: getattr(info, field) if info.known else None
                        for field, col in FIELDS})
            row["price in /1M"] = None if price is None else price.input
            row["price out /1M"] = None if price is None else price.output
            row["note"] = "; ".join(x for x in (
                "default" if model == ep.default_model else "",
                "" if info.known else "not in the catalogue", note) if x)
            rows.append(row)
    return ModelsTable(pd.DataFrame(rows, columns=[c[0] for c in COLUMNS]))
