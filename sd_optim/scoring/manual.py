"""Rating by hand: the ``manual`` scorer waits for a person's 1-10 ratings, given in the tab.

The run's :class:`RatingDesk` holds the images waiting to be rated; the tab reads them and hands
the ratings in (a button or a number key per image, "skip image", "rate the whole trial"). The
scorer waits on a condition variable (no GPU work meanwhile) and polls the run's stop request, so
Stop ends a run that waits for ratings. A rating r scores r / 10; a skipped image takes the mean
of the batch's rated ones; a batch whose images were all skipped fails the trial.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from .base import ImageToScore, ScoreContext, Scorer, ScorerError, ScoringStopped, register_scorer

SKIP = "skip"


class RatingDesk:
    """Images waiting for ratings, shared by the run (which asks) and the tab (which rates)."""

    def __init__(self, on_change: Callable[[], None] = lambda: None):
        self._cond = threading.Condition()
        self._pending: list[ImageToScore] = []
        self._ratings: list[Any] = []  # None (not yet), a rating 1-10, or SKIP
        self._trial = -1
        self._whole_trial: dict[int, int] = {}  # trial -> the rating given to all its images
        self.on_change = on_change

    def ask(self, images: list[ImageToScore], trial: int, should_stop: Callable[[], bool]) -> list[Any]:
        """Block until every image is rated or skipped; the ratings (or SKIP), in order."""
        with self._cond:
            self._pending, self._trial = list(images), trial
            whole = self._whole_trial.get(trial)
            self._ratings = [whole] * len(images)
        self.on_change()
        try:
            while True:
                with self._cond:
                    if all(r is not None for r in self._ratings):
                        return list(self._ratings)
                    self._cond.wait(0.2)
                if should_stop():
                    raise ScoringStopped()
        finally:
            with self._cond:
                self._pending, self._ratings = [], []
            self.on_change()

    def waiting(self) -> list[tuple[int, ImageToScore, int]]:
        """(position, image, trial) of every image still to rate."""
        with self._cond:
            return [(i, item, self._trial) for i, (item, r) in enumerate(zip(self._pending, self._ratings))
                    if r is None]

    def rate(self, value: Any, position: int | None = None) -> None:
        """Rate (1-10) or skip (SKIP) one image: ``position``, or the first one still waiting."""
        if value != SKIP:
            _check(value)
        with self._cond:
            open_ = [i for i, r in enumerate(self._ratings) if r is None]
            if not open_:
                return
            i = open_[0] if position is None else position
            if i in open_:
                self._ratings[i] = value
                self._cond.notify_all()
        self.on_change()

    def rate_trial(self, value: int) -> None:
        """The same rating for every image of the trial being rated, those still to come included."""
        _check(value)
        with self._cond:
            self._whole_trial[self._trial] = value
            self._ratings = [value if r is None else r for r in self._ratings]
            self._cond.notify_all()
        self.on_change()


def _check(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10:
        raise ValueError(f"rating: must be a whole number from 1 to 10, got {value!r}")


@register_scorer
class ManualScorer(Scorer):
    name = "manual"
    summary = "your own rating, 1-10, given in the tab while the run waits"
    needs_person: ClassVar[bool] = True
    option_defaults: ClassVar[Mapping[str, Any]] = {}

    def score(self, images: list[ImageToScore], ctx: ScoreContext) -> list[float]:
        if ctx.ratings is None:
            raise ScorerError("scorer 'manual': rating by hand needs the Optimize Merge tab")
        ratings = ctx.ratings.ask(images, ctx.trial, ctx.should_stop)
        rated = [r for r in ratings if r != SKIP]
        if not rated:
            raise ScorerError(f"scorer 'manual': every image of prompt set {images[0].payload!r} was skipped")
        mean = sum(rated) / len(rated) / 10
        return [mean if r == SKIP else r / 10 for r in ratings]
