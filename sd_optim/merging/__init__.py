"""Merge engines: write a recipe's merged weights into a host's slot."""

from ._cached import CachedStateDict
from ._engine import MERGE_DTYPES, MergeEngine, MergeError, MergeStats

__all__ = ["MERGE_DTYPES", "CachedStateDict", "MergeEngine", "MergeError", "MergeStats"]
