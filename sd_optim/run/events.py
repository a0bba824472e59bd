"""Typed events the runner yields; the CLI, the tab and the artifacts writer consume them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Event:
    @property
    def kind(self) -> str:
        return type(self).__name__


@dataclass
class RunStarted(Event):
    study: str
    run_dir: str
    trials: int
    params: list[str]
    model_config: str
    resumed_from: int = 0  # trials already in the study


@dataclass
class ReferenceScored(Event):
    model: str
    value: float | None  # None: scoring this input failed (``reason`` says why)
    per_payload: dict[str, float]
    reason: str = ""


@dataclass
class TrialStarted(Event):
    number: int
    params: dict[str, Any]


@dataclass
class TrialMerged(Event):
    number: int
    seconds: float
    keys: int


@dataclass
class ImageScored(Event):
    trial: int  # -1 for a reference row
    payload: str
    index: int
    image: Any  # PIL image
    seed: int
    prompt: str
    negative_prompt: str
    infotext: str
    scores: dict[str, float]
    params: dict[str, Any] = field(default_factory=dict)
    path: str = ""  # filled in by the artifacts writer
    stage: str = ""  # "confirm": trial ``trial`` rendered again on fresh seeds (optimizer.confirm_top)


@dataclass
class TrialFinished(Event):
    number: int
    state: str  # "COMPLETE" | "FAIL" | "PRUNED"
    value: float | None  # a pruned trial's: its score over the prompt sets it finished; several objectives: their mean
    params: dict[str, Any]
    per_payload: dict[str, float] = field(default_factory=dict)
    per_scorer: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    reason: str = ""  # why it failed or was pruned
    intermediate: dict[int, float] = field(default_factory=dict)  # the running score after each prompt set (pruning)
    objectives: dict[str, float] = field(default_factory=dict)  # scoring.objectives: each one's value


@dataclass
class SamplerHandedOver(Event):
    """``optimizer.max_suggest_s``: the sampler was too slow to suggest; TPE suggests from trial
    ``number`` on."""

    number: int
    note: str


@dataclass
class ConfirmationStarted(Event):
    """The run's trials are done: the best ``trials`` (numbers, best first) are rendered again on
    fresh seeds (``optimizer.confirm_top``)."""

    trials: list[int]


@dataclass
class TrialConfirmed(Event):
    number: int
    value: float  # its value in the study, on the prompt sets' own seeds
    fresh_value: float  # on the fresh seeds
    combined: float  # what the winner is chosen by: the mean of the two
    per_payload: dict[str, float] = field(default_factory=dict)  # on the fresh seeds


@dataclass
class ConfirmationFinished(Event):
    winner: int | None  # the trial with the highest combined value; None: the stage did not finish
    combined: float | None
    raw_best: int  # the trial with the highest value in the study
    note: str = ""  # why it did not finish


@dataclass
class CoarseFinished(Event):
    """``optimizer.coarse_trials``: the coarse stage's study is done; the guide's space starts from
    its best (a RunStarted of the fine study follows, unless the run ends here)."""

    study: str
    run_dir: str
    trials: int
    best_trial: int | None
    best_value: float | None
    reason: str


@dataclass
class RunPaused(Event):
    """Between trials, until the control object resumes (or stops) the run."""

    next_trial_index: int  # trials run so far in this session


@dataclass
class RunResumed(Event):
    pass


@dataclass
class NewBest(Event):
    number: int
    value: float
    params: dict[str, Any]
    recipe: str  # .mecha text


@dataclass
class RunFinished(Event):
    study: str
    run_dir: str
    reason: str  # "completed" | "stopped" | "early stopping" | "trial failed"
    trials: int  # trials run in this session
    best_trial: int | None
    best_value: float | None
    best_params: dict[str, Any]
    best_recipe: str  # path of best.mecha, "" if no trial completed
    kept_trial: int | None = None  # after_run.keep_best: the trial left loaded in the host
    saved_checkpoint: str = ""  # after_run.save_best: the checkpoint written
    after_run_note: str = ""  # why keep/save did not happen, when asked for
    completed: int = 0  # trials completed in this session
    pruned: int = 0  # trials the pruner stopped in this session
    confirmed_trial: int | None = None  # optimizer.confirm_top: the winner on both seeds (best.mecha's)
    confirmed_value: float | None = None  # its combined value
    sampler_note: str = ""  # the sampler was handed over to TPE in this session: why
    failure: str = ""  # set when this session's trials all failed: why (the last failure)
    # scoring.objectives: the study's Pareto front, [{"trial", "objectives": {name: value}, "value"}]
    pareto: list[dict[str, Any]] = field(default_factory=list)
    coarse_study: str = ""  # optimizer.coarse_trials: the coarse stage's study, where this one started


@dataclass
class RunFailed(Event):
    error: str


@dataclass
class RunTally:
    """What a run's status shows, updated event by event: reading it costs the same after trial
    10 as after trial 10,000 (the tab polls it several times a second)."""

    started: RunStarted | None = None
    trials_done: int = 0  # finished in this session, failed ones included
    best: NewBest | None = None
    current_trial: int | None = None  # started and not finished yet
    last_timings: dict[str, float] = field(default_factory=dict)  # of the last completed trial
    confirming: tuple[int, int] | None = None  # the confirmation stage: (trials confirmed, of how many)

    def add(self, event: Event) -> None:
        if isinstance(event, RunStarted):  # a run's (or, after a coarse stage, its fine study's) start
            self.__init__()
            self.started = event
        elif isinstance(event, TrialStarted):
            self.current_trial = event.number
        elif isinstance(event, TrialFinished):
            self.trials_done += 1
            self.current_trial = None
            if event.state == "COMPLETE":
                self.last_timings = dict(event.timings)
        elif isinstance(event, NewBest):
            self.best = event
        elif isinstance(event, ConfirmationStarted):
            self.confirming = (0, len(event.trials))
        elif isinstance(event, TrialConfirmed) and self.confirming is not None:
            self.confirming = (self.confirming[0] + 1, self.confirming[1])
        elif isinstance(event, ConfirmationFinished):
            self.confirming = None
