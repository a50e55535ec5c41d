"""llmdispatch-nb: one routing core for many LLM vendors, made for notebooks."""

__version__ = "0.1.0"
