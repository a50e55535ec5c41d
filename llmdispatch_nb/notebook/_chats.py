"""Named conversations that span cells: `%%llm --chat NAME`.

A chat keeps every turn; what is *sent* is trimmed to the last `max_turns` exchanges and
to a token budget (estimated, vendor-neutral), oldest exchanges dropped first, so a long
conversation never grows past the model's window or the user's wallet unnoticed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .._types import Message, estimate_tokens


@dataclass
class Chat:
    name: str
    turns: list[tuple[str, str]] = field(default_factory=list)  # (user, assistant)
    system: str | None = None
    target: str | None = None  # what the last turn was sent to

    def history(self, max_turns: int, max_tokens: int, prompt: str = "") -> list[Message]:
        """The earlier turns to send before `prompt`, trimmed."""
        kept = self.turns[-max_turns:] if max_turns > 0 else []
        if max_tokens > 0:
            budget = max_tokens - estimate_tokens(prompt) - estimate_tokens(self.system or "")
            while kept and sum(estimate_tokens(u) + estimate_tokens(a) for u, a in kept) > budget:
                kept = kept[1:]
        out: list[Message] = []
        for user, assistant in kept:
            out.append(Message("user", user))
            out.append(Message("assistant", assistant))
        return out

    def messages(self, prompt: str, max_turns: int, max_tokens: int) -> list[Message]:
        return [*self.history(max_turns, max_tokens, prompt), Message("user", prompt)]

    def record(self, prompt: str, answer: str, target: str | None) -> None:
        self.turns.append((prompt, answer))
        if target:
            self.target = target

    @property
    def tokens(self) -> int:
        return sum(estimate_tokens(u) + estimate_tokens(a) for u, a in self.turns)


class ChatBook:
    """Every chat of one notebook session, by name."""

    def __init__(self) -> None:
        self.chats: dict[str, Chat] = {}

    def get(self, name: str) -> Chat:
        """The chat called `name`, made and kept if new."""
        return self.chats.setdefault(name, Chat(name))

    def find(self, name: str) -> Chat:
        """The chat called `name`, or a new one that is not kept until `keep`."""
        return self.chats.get(name) or Chat(name)

    def keep(self, chat: Chat) -> None:
        self.chats[chat.name] = chat

    def reset(self, name: str | None = None) -> list[str]:
        """Forget one chat (or all); returns the names forgotten."""
        if name is None:
            gone = list(self.chats)
            self.chats.clear()
            return gone
        if name not in self.chats:
            return []
        del self.chats[name]
        return [name]

    def __contains__(self, name: object) -> bool:
        return name in self.chats

    def __len__(self) -> int:
        return len(self.chats)
