"""Merge engines: write a recipe's merged weights into a host's slot."""

from ._cached import CachedStateDict
from ._engine import MergeEngine, MergeError, MergeStats

__all__ = ["CachedStateDict", "MergeEngine", "MergeError", "MergeStats"]
