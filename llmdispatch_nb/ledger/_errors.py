from __future__ import annotations

from ..errors import LLMDispatchError


class LedgerError(LLMDispatchError):
    """The ledger cannot be opened, written or read (the message says why and what to do)."""
