"""What the tab shows, as plain values: the status line, the trials table, the best-so-far panel,
the guide's YAML view and the parameter preview. No gradio here (the tests read these directly).
"""

from __future__ import annotations

import math
from typing import Any

import yaml

from ..run.shared import WORKER_ATTR
from ..run.study import CONFIRM_ATTR, chosen_trial, objective_names, pareto_front, trial_value

TRIAL_COLUMNS = ["trial", "state", "value", "seconds", "parameters", "worker"]


def status_markdown(status: dict[str, Any]) -> str:
    """``2 of 8 trials done · trial #5 running · best 0.91 (trial #4) · about 40 s left · last trial:
    merge 0.1 s, ...``: trials are named by their study number (``#5``) everywhere, counts are counts."""
    state = status.get("state", "idle")
    if state in ("idle", "refused"):
        return status.get("text", "")
    if state == "running":
        parts = []
        current = status.get("current_trial")
        done, total = status.get("trials_done", 0), status.get("trials_total") or "?"
        parts.append(f"**{done} of {total} trials done**")
        if status.get("stopping"):
            parts.append("**stopping after the current image…**")
        elif status.get("confirming"):
            done_, of = status["confirming"]
            parts.append(f"confirming the best {of} on fresh seeds ({done_} of {of} done)")
        elif current is not None:
            parts.append(f"trial #{current} running")
        if status.get("paused"):
            parts.append("paused")
        if status.get("awaiting_ratings"):
            n = status["awaiting_ratings"]
            parts.append(f"**waiting for your rating** ({n} image{'s' if n != 1 else ''})")
    else:
        parts = [status.get("text", state)]
    if status.get("best_value") is not None and state == "running":
        parts.append(f"best {status['best_value']:.4f} (trial #{status['best_trial']})")
    if status.get("eta_seconds") is not None:
        parts.append(f"about {duration(status['eta_seconds'])} left")
    timings = status.get("last_timings") or {}
    if timings:
        split = ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
        parts.append(f"last trial: {split}")
    return " · ".join(parts)


def duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def params_text(params: dict[str, Any], limit: int = 6) -> str:
    items = [f"{k}={_value(v)}" for k, v in params.items()]
    return ", ".join(items[:limit]) + (f", … (+{len(items) - limit})" if len(items) > limit else "")


def trial_rows(study) -> list[list[Any]]:
    """Every trial of the study (earlier sessions included), newest first."""
    if study is None:
        return []
    rows = []
    names = objective_names(study) if len(study.directions) > 1 else []
    for t in reversed(study.trials):
        seconds = ""
        if t.datetime_start is not None and t.datetime_complete is not None:
            seconds = round((t.datetime_complete - t.datetime_start).total_seconds(), 2)
        value = trial_value(t)
        value = "" if value is None or not math.isfinite(value) else round(value, 6)
        state = t.state.name
        if state == "FAIL" and t.user_attrs.get("fail_reason"):
            state = f"FAIL ({t.user_attrs['fail_reason']})"
        elif state == "PRUNED" and t.user_attrs.get("prune_reason"):
            state = f"PRUNED ({t.user_attrs['prune_reason']})"
        text = params_text(t.params)
        ratings = t.user_attrs.get("manual_ratings")
        if ratings:  # rated by hand: the ratings stay visible when the study is continued later
            text = "rated " + "; ".join(f"{p} {', '.join(f'{r:g}' for r in rs)}" for p, rs in ratings.items()) \
                + " · " + text
        if names and t.values is not None:  # several objectives: the value is their mean
            text = " · ".join(f"{n} {v:.4f}" for n, v in zip(names, t.values)) + " · " + text
        rows.append([t.number, state, value, seconds, text, worker_text(t.user_attrs.get(WORKER_ATTR))])
    return rows


def worker_text(worker: Any) -> str:
    """Which worker ran a trial of a shared study ("" for a run's own)."""
    if not isinstance(worker, dict):
        return ""
    return f"{worker.get('host', '?')}:{worker.get('pid', '?')} ({worker.get('kind', '?')})"


def best_markdown(study) -> str:
    if study is None:
        return "No trial yet."
    try:
        bt = chosen_trial(study)
    except ValueError:
        return "No completed trial yet."
    confirmed = study.user_attrs.get(CONFIRM_ATTR) or {}
    if len(study.directions) > 1:
        lines = pareto_lines(study, bt.number)
    elif confirmed.get("trials"):
        lines = confirmation_lines(confirmed, study.best_trial.number)
    else:
        lines = [f"**Best: trial {bt.number}**, value **{bt.value:.6f}**"]
    return "\n".join([*lines, "", *(f"- `{k}` = {_value(v)}" for k, v in bt.params.items())])


def pareto_lines(study, pick: int) -> list[str]:
    """Several objectives: the Pareto front's table (no trial in it is beaten on every objective by
    another), the balanced pick (the highest mean) marked; any of them can be taken under Results."""
    names = objective_names(study)
    front = pareto_front(study)
    head = (f"**Pareto front: {len(front)} trial{'s' if len(front) != 1 else ''}** (none beaten on every "
            f"objective). Balanced pick: **trial {pick}** (the highest mean; best.mecha, keep-best and "
            "save-best take it). To take another, enter its number under Results.")
    rows = ["| trial | " + " | ".join(names) + " | mean |", "|---" * (len(names) + 2) + "|"]
    for t in sorted(front, key=lambda t: -trial_value(t)):
        mark = " ✓" if t.number == pick else ""
        rows.append(f"| {t.number}{mark} | " + " | ".join(f"{v:.4f}" for v in t.values) + f" | {trial_value(t):.4f} |")
    return [head, "", *rows, "", f"Parameters of trial {pick}:"]


def confirmation_lines(confirmed: dict[str, Any], raw_best: int) -> list[str]:
    """The confirmation stage's table: each trial's value, on fresh seeds and both; the winner first."""
    winner = confirmed.get("winner")
    head = (f"**Best: trial {winner}** on both seeds (the highest value alone: trial {raw_best})"
            if winner != raw_best else f"**Best: trial {winner}**, confirmed on fresh seeds")
    rows = ["| trial | value | on fresh seeds | both |", "|---|---|---|---|"]
    for number, r in sorted(confirmed["trials"].items(), key=lambda kv: -kv[1]["combined"]):
        mark = " ✓" if str(winner) == number else ""
        rows.append(f"| {number}{mark} | {r['value']:.6f} | {r['fresh_value']:.6f} | {r['combined']:.6f} |")
    return [head, "", *rows, "", f"Parameters of trial {winner}:"]


def guide_yaml(data: dict[str, Any]) -> str:
    """The ``guide:`` section of the config the form describes."""
    guide = data.get("guide") or {}
    return yaml.safe_dump({"guide": guide}, sort_keys=False, default_flow_style=None)


def preview_markdown(lines: list[str], problems: list[str]) -> str:
    if problems:
        return "**Cannot list the parameters yet:**\n" + "\n".join(f"- {p}" for p in problems)
    params = [line for line in lines if not line.startswith("note: ")]
    notes = [line[6:] for line in lines if line.startswith("note: ")]
    text = f"**{len(params)} parameter{'s' if len(params) != 1 else ''} to tune**\n\n"
    text += "\n".join(f"- `{line}`" for line in params)
    if notes:
        text += "\n\n" + "\n".join(f"- {n}" for n in notes)
    return text


def problems_markdown(problems: list[str]) -> str:
    return "\n".join(f"- ⚠ {p}" for p in problems)
