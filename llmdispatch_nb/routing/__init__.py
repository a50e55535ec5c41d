"""Targets -> ordered candidates: which vendor and model serve a request, and in what order."""

from ._targets import Candidate, TargetResolver

__all__ = ["Candidate", "TargetResolver"]
