"""Scorers: turn generated images into numbers the optimizer can maximise.

Importing this package registers the built-in scorers. Weights load lazily, from local files.
"""

from . import (  # noqa: F401  (importing them registers the built-in scorers)
    aesthetic_v2_5,
    blip,
    city_aesthetics,
    clip_score,
    degenerate,
    hps,
    hpsv3,
    image_reward,
    image_stats,
    laion_aesthetic,
    manual,
    noise,
    pickscore,
    reference,
    similarity,
    wd_aesthetic,
)
from .base import (
    BackboneCache,
    ImageToScore,
    ScoreContext,
    Scorer,
    ScorerError,
    ScoringStopped,
    available_scorers,
    build_scorers,
    get_scorer_class,
    register_scorer,
)
from .combine import MEANS, balanced, combine_trial, objective_values, weighted_mean

__all__ = [
    "MEANS",
    "BackboneCache",
    "ImageToScore",
    "ScoreContext",
    "Scorer",
    "ScorerError",
    "ScoringStopped",
    "available_scorers",
    "balanced",
    "build_scorers",
    "combine_trial",
    "get_scorer_class",
    "objective_values",
    "register_scorer",
    "weighted_mean",
]
