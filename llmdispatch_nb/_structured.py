"""A whole answer read against what was asked: the schema's `.parsed` / `.valid` /
`.validation_errors`, and a schema answered through a forced tool turned back into text.

One place for every vendor, after the adapter: Anthropic models without native structured
output answer a schema as a call of one forced tool (vendors/anthropic.py); its arguments
are the answer, so they become the text, and no tool call is left for the user to run.
"""

from __future__ import annotations

from dataclasses import replace

from ._schema import read_answer
from ._types import Request, Response


def finish_response(resp: Response, request: Request) -> Response:
    """`resp` with its structured-output fields filled (unchanged without a schema)."""
    schema = request.schema
    if schema is None:
        return resp
    calls = resp.tool_calls
    if not resp.text.strip() and len(calls) == 1 and calls[0].name == schema.name \
            and schema.name not in {t.name for t in request.tools}:
        resp = replace(resp, text=calls[0].raw_arguments, tool_calls=(),
                       finish_reason="stop" if resp.finish_reason == "tool_calls"
                       else resp.finish_reason)
    parsed, valid, errors = read_answer(schema, resp.text)
    return replace(resp, parsed=parsed, valid=valid, validation_errors=errors)
