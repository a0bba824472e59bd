"""Combining per-image scores into one trial value.

Two weighted means are applied in turn: across the scorers that scored a prompt set, then across
the prompt sets. The geometric mean punishes a merge that fails badly on one scorer or one prompt
set more than the arithmetic mean does; the quadratic mean rewards a standout more.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

MEANS = ("arithmetic", "geometric", "quadratic")


def weighted_mean(values: Sequence[float], weights: Sequence[float], kind: str) -> float:
    """Weighted arithmetic, geometric or quadratic mean.

    Entries with weight 0 take no part at all (so a disabled scorer's value is never checked).
    The geometric mean needs positive values and the quadratic mean non-negative ones: for
    negative numbers their results would not order candidates the way the values do.
    """
    if kind not in MEANS:
        raise ValueError(f"unknown mean {kind!r}; expected one of {', '.join(MEANS)}")
    if len(values) != len(weights):
        raise ValueError(f"{len(values)} values but {len(weights)} weights")
    pairs = []
    for value, weight in zip(values, weights):
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"weight {weight!r} must be a finite number >= 0")
        if weight == 0:
            continue
        if not math.isfinite(value):
            raise ValueError(f"value {value!r} is not a finite number")
        if kind == "geometric" and value <= 0:
            raise ValueError(f"the geometric mean needs values > 0, got {value!r}")
        if kind == "quadratic" and value < 0:
            raise ValueError(f"the quadratic mean needs values >= 0, got {value!r}")
        pairs.append((float(value), float(weight)))
    total = sum(weight for _, weight in pairs)
    if total <= 0:
        raise ValueError(f"weights must sum to more than 0, got {list(weights)!r}")

    if kind == "arithmetic":
        return sum(w * v for v, w in pairs) / total
    if kind == "geometric":
        return math.exp(sum(w * math.log(v) for v, w in pairs) / total)
    return math.sqrt(sum(w * v * v for v, w in pairs) / total)


def combine_trial(
    per_payload: Mapping[str, Mapping[str, Sequence[float]]],
    scorer_weights: Mapping[str, float],
    payload_weights: Mapping[str, float],
    scorer_mean: str,
    payload_mean: str,
) -> tuple[float, dict[str, float]]:
    """The trial's value and each prompt set's value.

    ``per_payload`` maps prompt set -> scorer -> per-image scores. A prompt set is combined over
    the scorers present for it (scorer filters give a prompt set a subset), each scorer's images
    averaged first. Every present scorer and every prompt set needs a weight: a missing one is a
    config mistake, not something to guess.
    """
    if not per_payload:
        raise ValueError("no prompt sets were scored")
    payload_values: dict[str, float] = {}
    for payload, by_scorer in per_payload.items():
        if not by_scorer:
            raise ValueError(f"prompt set {payload!r}: no scorer scored it")
        names = list(by_scorer)
        missing = [name for name in names if name not in scorer_weights]
        if missing:
            raise ValueError(f"prompt set {payload!r}: no weight given for scorer(s) {missing}")
        means = []
        for name in names:
            scores = by_scorer[name]
            if len(scores) == 0:
                raise ValueError(f"prompt set {payload!r}: scorer {name!r} returned no scores")
            try:
                means.append(weighted_mean(scores, [1.0] * len(scores), "arithmetic"))
            except ValueError as error:
                raise ValueError(f"prompt set {payload!r}, scorer {name!r}: {error}") from None
        try:
            payload_values[payload] = weighted_mean(
                means, [scorer_weights[name] for name in names], scorer_mean
            )
        except ValueError as error:
            raise ValueError(f"prompt set {payload!r}, scorers {names}: {error}") from None

    missing = [payload for payload in payload_values if payload not in payload_weights]
    if missing:
        raise ValueError(f"no weight given for prompt set(s) {missing}")
    payloads = list(payload_values)
    try:
        trial_value = weighted_mean(
            [payload_values[p] for p in payloads],
            [payload_weights[p] for p in payloads],
            payload_mean,
        )
    except ValueError as error:
        raise ValueError(f"combining prompt sets {payloads}: {error}") from None
    return trial_value, payload_values


def objective_values(
    per_payload: Mapping[str, Mapping[str, Sequence[float]]],
    objectives: Mapping[str, Sequence[str]],
    scorer_weights: Mapping[str, float],
    payload_weights: Mapping[str, float],
    scorer_mean: str,
    payload_mean: str,
) -> dict[str, float]:
    """Each objective's value (``scoring.objectives``: name -> its scorers): :func:`combine_trial`
    over its scorers' scores alone, on the prompt sets they scored."""
    out = {}
    for name, members in objectives.items():
        own = {payload: {s: scores for s, scores in by_scorer.items() if s in members}
               for payload, by_scorer in per_payload.items()}
        own = {payload: by_scorer for payload, by_scorer in own.items() if by_scorer}
        if not own:
            raise ValueError(f"objective {name!r}: none of its scorers ({', '.join(members)}) scored a prompt set")
        try:
            out[name], _ = combine_trial(own, scorer_weights, payload_weights, scorer_mean, payload_mean)
        except ValueError as error:
            raise ValueError(f"objective {name!r}: {error}") from None
    return out


def balanced(values: Mapping[str, float]) -> float:
    """Several objectives' values as one number: their mean (every objective on the same 0–1
    scale when scores are normalised). The trial with the highest is on the Pareto front."""
    return sum(values.values()) / len(values)
