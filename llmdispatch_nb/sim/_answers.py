"""The text of a simulated answer: a well-formed reply of the shape the request asked for.

No model reads the question, so the content stands in for an answer and says so; but it
reads as an answer would: it quotes the whole latest user turn (shortened with an ellipsis
when long), then gives prose, a numbered list ("Name three rivers." gets three items), a
fenced code block (when code is asked for) or one JSON value (when JSON is asked for, by
a response format or in the words of the request); a request that names a grade ("Score:
7/10") gets that grade, so a test can script a judge. No sentence appears twice. The choice
of sentences, their order and the answer's length come from the caller's `random.Random`,
which `_core.generate()` seeds from vendor, model, seed and prompt: the same request gets
the same answer, another model or seed a different one.

`_core.generate()` turns the text into counted tokens and applies max_tokens and stops.
"""

from __future__ import annotations

import json
import keyword
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

SHAPES = ("prose", "list", "code", "json", "score")

QUOTE_LIMIT = 200  # characters of the question quoted before the ellipsis


@dataclass(frozen=True)
class Question:
    """What the answer responds to, as an emulator read it from the request.

    `text` is the latest user turn only (never an earlier assistant turn, which a chat's
    history also carries); `instructions` the system text, read only for what shape it asks
    for; `shape` a shape the request declared outright (a JSON response format)."""

    text: str
    instructions: str = ""
    shape: str | None = None

    @classmethod
    def from_turns(cls, turns: Iterable[tuple[str | None, str]], *,
                   user: Sequence[str] = ("user",),
                   instructions: Sequence[str] = ("system", "developer"),
                   shape: str | None = None) -> Question:
        """From (role, text) pairs in request order: the last run of user turns is the
        question (several text blocks of one message are one question)."""
        pairs = list(turns)
        asked: list[str] = []
        for role, text in reversed(pairs):
            if role in user:
                asked.append(text)
            elif asked:
                break
        told = "\n".join(text for role, text in pairs if role in instructions)
        return cls("\n".join(reversed(asked)), told, shape)

    def wanted(self) -> str:
        return self.shape if self.shape in SHAPES else requested_shape(self.text, self.instructions)


# -- what the request asks for -------------------------------------------------------------

_NUMBERS = {w: i for i, w in enumerate((
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen", "twenty"))}
_COUNT = r"\b(?P<n>\d{1,2}|" + "|".join(_NUMBERS) + r"|a few|several|some)"
_COUNTED = re.compile(_COUNT + r"\s+(?:[a-z-]+\s+){0,2}?(?P<noun>[a-z]+s)\b", re.IGNORECASE)
_LIST_VERB = re.compile(r"^\W*(?:please\s+)?(?:list|name|enumerate|give(?:\s+me)?|suggest|"
                        r"recommend|what\s+are)\b", re.IGNORECASE)
_LIST_WORD = re.compile(r"\b(?:a\s+list|bullet(?:ed)?\s+(?:list|points?)|as\s+a\s+list|"
                        r"numbered\s+list)\b", re.IGNORECASE)
_SENTENCES = re.compile(r"\b(?:in|with|using)?\s*" + _COUNT + r"\s+(?:short\s+)?sentences?\b",
                        re.IGNORECASE)
_JSON = re.compile(r"\bjson\b", re.IGNORECASE)
# A grade the request names ("Score: 7/10 is the only grade you give"): a test scripts a
# judge's verdict this way. A bare form ("Score: N/10") gets no grade: a simulated judge
# that graded would pass for a real one.
_SCORE = re.compile(r"\bScore:\s*(?P<n>\d+)\s*/\s*(?P<of>\d+)", re.IGNORECASE)
_CODE_ASK = re.compile(
    r"\b(?:write|show|give|create|generate|implement|fix|refactor|convert|translate|sketch|"
    r"code\s+up)\b[^.?!\n]*\b(?:code|function|script|program|snippet|class|method|regex|"
    r"query|sql|python|javascript|typescript|bash)\b", re.IGNORECASE)
_CODE_IN = re.compile(r"\bin\s+(?:python|javascript|typescript|sql|bash)\b", re.IGNORECASE)
_CODE_TOLD = re.compile(r"\b(?:code\s+block|fenced)\b", re.IGNORECASE)
_LANGUAGES = (("python", "python"), ("typescript", "typescript"), ("javascript", "javascript"),
              ("node", "javascript"), ("sql", "sql"), ("bash", "bash"), ("shell", "bash"))


def requested_shape(question: str, instructions: str = "") -> str:
    """The shape asked for in words: a score, JSON, code, a list, else prose."""
    if _SCORE.search(instructions) or _SCORE.search(question):
        return "score"
    if _JSON.search(question) or _JSON.search(instructions):
        return "json"
    if _CODE_ASK.search(question) or _CODE_IN.search(question) or _CODE_TOLD.search(instructions):
        return "code"
    if _LIST_WORD.search(question) or (_LIST_VERB.search(question) and _counted(question)):
        return "list"
    return "prose"


def _number(word: str, rng: random.Random) -> int:
    word = word.lower()
    if word.isdigit():
        return int(word)
    return _NUMBERS.get(word) or rng.randint(3, 5)


def _counted(question: str) -> re.Match[str] | None:
    m = _COUNTED.search(question)
    if m is None or m.group("noun").lower() in ("sentences", "lines", "words", "paragraphs"):
        return None
    return m


def _singular(noun: str) -> str:
    low = noun.lower()
    if low.endswith("ies") and len(low) > 4:
        return noun[:-3] + "y"
    if low.endswith(("ches", "shes", "sses", "xes")):
        return noun[:-2]
    return noun[:-1] if low.endswith("s") and not low.endswith("ss") else noun


def quote(question: str, limit: int = QUOTE_LIMIT) -> str:
    """The question on one line, cut at a word with an ellipsis when longer than `limit`."""
    flat = " ".join(question.split())
    if len(flat) <= limit:
        return flat
    cut = flat[:limit].rsplit(" ", 1)[0] if " " in flat[:limit] else flat[:limit]
    return cut.rstrip(" ,;:") + "…"


# -- the sentences ---------------------------------------------------------------------------

_LABELS = (
    "This is a simulated answer: the llmdispatch-nb emulator wrote it in place of {model}.",
    "No model read this question; the emulator answers in {model}'s place.",
    "What follows stands in for {model}'s answer and was generated by the llmdispatch-nb "
    "emulator.",
    "The emulator, not {model}, wrote this reply, so its content is a placeholder.",
)

_BODY = (
    "A real model would answer the question itself; this text only fills the space its "
    "answer would take.",
    "The length of this reply follows {model}'s usual answer length.",
    "Its first word arrived after {model}'s typical time to first token, and the rest came at "
    "its usual pace.",
    "Latency, time to first token and token counts are measured exactly as for a real call.",
    "The cost in the footer is priced from {model}'s list price, as a real call would be.",
    "Every attempt, this one included, is a row in the ledger you can read as a DataFrame.",
    "Set an API key for the vendor and the same request goes to the real {model}.",
    "Routing, retries, fallbacks and budgets treat this call exactly as they would a real one.",
    "Faults such as rate limits, timeouts and outages can be injected per vendor to see how "
    "the dispatcher copes.",
    "Side by side, each column times its own model, here as with the real vendors.",
    "The same prompt, model and seed always give this same text, so caches and replays can be "
    "checked.",
    "Another seed or another model gives a different stand-in, as real answers differ.",
    "Streaming delivers this text token by token, the way the vendor's API streams.",
    "The request went over a real HTTP connection to a local emulator of the vendor's API.",
    "The emulator checks parameters as the vendor does, so what the real API refuses is "
    "refused here too.",
    "Stop sequences and the token limit cut this text where the real API would cut it.",
    "Tokens are counted by the emulator at about four characters each.",
    "The numbers around this answer are the point of the demo; the words are placeholders.",
    "Ask for JSON, a list or code, and the stand-in answer takes that shape.",
    "Rate-limit headers come back as the vendor sends them, so limits can follow them.",
    "Once real keys are set, nothing else in the notebook needs to change.",
    "The demo needs no account, no key and no network beyond this machine.",
)

_ITEMS = (
    "a real model would name one here.",
    "placeholder text from the emulator.",
    "the emulator knows no real {nouns}.",
    "here a real model would add a line of detail.",
    "an example entry, simulated.",
    "a stand-in item; set a key for a real one.",
    "where {model}'s pick would go.",
    "simulated, like the rest of this list.",
    "one more placeholder in the list you asked for.",
    "left for a real model to fill in.",
)

_LIST_INTROS = (
    "{Count} {nouns}, as placeholders a real model would fill in:",
    "Here are {count} simulated {nouns}:",
    "A list of {count} {nouns}, written by the emulator rather than {model}:",
)

_CODE_INTROS = (
    "Here is a stand-in sketch; {model} would write the actual code.",
    "A placeholder in the shape of the code you asked for, simulated by the emulator:",
    "The emulator cannot write the code itself, so this block only has the right shape:",
)

_CODE_OUTROS = (
    "Run it and it defines the name without doing the work; a real model's code would.",
    "With a key set, {model} answers this request with working code.",
    "The block is fenced, so `-f code` puts it into a new cell.",
)


def _pick(rng: random.Random, pool: Sequence[str], k: int) -> list[str]:
    return rng.sample(list(pool), min(k, len(pool)))


def _paragraphs(sentences: list[str], rng: random.Random) -> str:
    out: list[str] = []
    while sentences:
        n = rng.randint(2, 4)
        out.append(" ".join(sentences[:n]))
        sentences = sentences[n:]
    return "\n\n".join(out)


def answer_text(question: Question, model: str, rng: random.Random, words: int) -> str:
    """The whole answer, about `words` words long for prose (other shapes take their size)."""
    shape = question.wanted()
    fill = {"model": model}
    asked = quote(question.text)
    if shape == "json":
        return _json(asked, question.text, model, rng)
    end = "" if asked.endswith((".", "?", "!", "…")) else "."
    head = f"[simulated {model}] You asked: “{asked}”{end}"
    label = rng.choice(_LABELS).format(**fill)
    if shape == "code":
        return _code(head, asked, question, model, rng)
    if shape == "score":
        return head + "\n\n" + _score(question, model, rng) + " " + label
    if shape == "list":
        return head + "\n\n" + label + "\n\n" + _list(question.text, model, rng)
    body = list(rng.sample(_BODY, len(_BODY)))
    wanted = _SENTENCES.search(question.text)
    if wanted is not None:  # "In three sentences: ..." gets three, the label included
        body = body[: max(0, min(_number(wanted.group("n"), rng), len(body) + 1) - 1)]
    else:
        have = len(head.split()) + len(label.split())
        kept: list[str] = []
        for s in body:
            if have >= words and kept:
                break
            kept.append(s)
            have += len(s.split())
        body = kept
    return head + " " + label + "\n\n" + _paragraphs([s.format(**fill) for s in body], rng)


def _list(text: str, model: str, rng: random.Random) -> str:
    m = _counted(text)
    count = min(_number(m.group("n"), rng), 20) if m else rng.randint(3, 5)
    nouns = m.group("noun").lower() if m else "items"
    noun = _singular(nouns)
    said = next((w for w, i in _NUMBERS.items() if i == count), str(count))
    fill = {"model": model, "nouns": nouns, "count": said, "Count": said.capitalize()}
    lines = [rng.choice(_LIST_INTROS).format(**fill), ""]
    phrases = _pick(rng, _ITEMS, count)
    for i in range(count):
        item = f"{i + 1}. **{noun.capitalize()} {i + 1}**"
        lines.append(item + (": " + phrases[i].format(**fill) if i < len(phrases) else ""))
    return "\n".join(lines)


_REASONS = (
    "The emulator gives this grade without reading the answer.",
    "A simulated verdict: no model weighed the answer against the rubric.",
    "This grade is a placeholder for {model}'s judgement.",
)


def _score(question: Question, model: str, rng: random.Random) -> str:
    """'Score: K/N', the grade the request names, and a reason."""
    m = _SCORE.search(question.instructions) or _SCORE.search(question.text)
    assert m is not None
    return f"Score: {m.group('n')}/{m.group('of')}. " + rng.choice(_REASONS).format(model=model)


def _json(asked: str, text: str, model: str, rng: random.Random) -> str:
    body = rng.sample(_BODY, 2)
    value: dict[str, object] = {
        "simulated": True,
        "model": model,
        "question": asked,
        "answer": rng.choice(_LABELS).format(model=model) + " " + body[0].format(model=model),
        "confidence": round(rng.uniform(0.2, 0.9), 2),
    }
    m = _counted(text)
    if m is not None or _LIST_WORD.search(text):
        count = min(_number(m.group("n"), rng), 20) if m else rng.randint(3, 5)
        noun = _singular(m.group("noun").lower()) if m else "item"
        value["items"] = [f"{noun} {i + 1} (simulated)" for i in range(count)]
    value["note"] = body[1].format(model=model)
    return json.dumps(value, indent=2, ensure_ascii=False)


_STOPWORDS = frozenset((
    "a", "an", "the", "of", "in", "on", "and", "or", "with", "from", "into", "my", "your", "its",
    "given", "each", "every", "all", "to", "for", "that", "which", "this", "it", "be", "is", "are",
    "me", "us", "some", "any"))


def _identifier(text: str) -> str:
    """A snake_case name for the stand-in code, from what the code should do."""
    m = re.search(r"\b(?:function|script|program|code|class|method|snippet)\s+"
                  r"(?:that|to|which|for|computing|returning)\s+(.*)", text, re.IGNORECASE)
    words = re.findall(r"[a-z][a-z0-9]*", (m.group(1) if m else "").lower())
    picked = [w for w in words if w not in _STOPWORDS][:3]
    if picked and len(picked[0]) > 3 and picked[0].endswith("s") and not picked[0].endswith("ss"):
        picked[0] = picked[0][:-1]  # "reverses a string" -> reverse_string
    name = "_".join(picked) or "solution"
    return name + "_" if keyword.iskeyword(name) else name


def _language(question: Question) -> str:
    low = (question.text + "\n" + question.instructions).lower()
    for word, lang in _LANGUAGES:
        if re.search(rf"\b{word}\b", low):
            return lang
    return "python"


def _code(head: str, asked: str, question: Question, model: str, rng: random.Random) -> str:
    lang = _language(question)
    name = _identifier(question.text)
    camel = name.split("_")[0] + "".join(w.capitalize() for w in name.split("_")[1:])
    note = f"Simulated by the llmdispatch-nb emulator in place of {model}."
    variant = rng.randrange(3)
    if lang == "python":
        code = [
            f"# {note}\n# Asked: {asked}\ndef {name}(*args, **kwargs):\n"
            f"    raise NotImplementedError(\"a simulated answer: {model} would write this\")",
            f"# {note}\n# Asked: {asked}\ndef {name}(items):\n    result = []\n"
            f"    for item in items:\n        result.append(item)  # a real model does the work here\n"
            f"    return result",
            f"# {note}\n# Asked: {asked}\nclass {''.join(w.capitalize() for w in name.split('_'))}:"
            f"\n    def run(self):\n        return None  # a real model would implement this",
        ][variant]
    elif lang in ("javascript", "typescript"):
        code = [
            f"// {note}\n// Asked: {asked}\nfunction {camel}(...args) {{\n"
            f"  throw new Error(\"a simulated answer: {model} would write this\");\n}}",
            f"// {note}\n// Asked: {asked}\nfunction {camel}(items) {{\n"
            f"  return items.map((item) => item); // a real model does the work here\n}}",
            f"// {note}\n// Asked: {asked}\nconst {camel} = () => null; // a placeholder",
        ][variant]
    elif lang == "sql":
        code = [f"-- {note}\n-- Asked: {asked}\nSELECT 'simulated' AS answer;",
                f"-- {note}\n-- Asked: {asked}\nSELECT 1 AS placeholder;",
                f"-- {note}\n-- Asked: {asked}\nSELECT NULL AS {name};"][variant]
    else:
        code = [f"# {note}\n# Asked: {asked}\necho \"simulated answer\"",
                f"# {note}\n# Asked: {asked}\n{name}() {{\n  echo \"a placeholder\"\n}}",
                f"# {note}\n# Asked: {asked}\nset -eu\necho \"nothing to do: simulated\""][variant]
    intro = rng.choice(_CODE_INTROS).format(model=model)
    outro = rng.choice(_CODE_OUTROS).format(model=model)
    return f"{head}\n\n{intro}\n\n```{lang}\n{code}\n```\n\n{outro}"


def response_format_shape(response_format: object) -> str | None:
    """OpenAI's `response_format`: `json_object` or `json_schema` asks for JSON."""
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    return "json" if isinstance(kind, str) and kind.startswith("json") else None
