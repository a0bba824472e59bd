"""Optuna studies: samplers, storage, create / resume / fork, and comparability checks."""

from __future__ import annotations

import difflib
import importlib
import inspect
import json
import logging
import math
import os
import re
import socket
import warnings
from pathlib import Path
from typing import Any

import optuna

from ..errors import ConfigError, Problem, StudyMismatchError
from ..files.paths import name_problem, safe_component, sqlite_file

log = logging.getLogger("sd_optim")

FINGERPRINT_ATTR = "sd_optim.fingerprint"
# optimizer.confirm_top's result: {"winner": N, "trials": {"N": {"value", "fresh_value", "combined"}}}
CONFIRM_ATTR = "sd_optim.confirmation"
OWNER_ATTR = "sd_optim.process"  # which process runs a trial: "host:pid:start time"
INTERRUPTED = "interrupted (process ended)"
ABANDONED = "interrupted (its run ended without recording it, e.g. on a full disk)"

# trials that runs of this process are running now (storage-independent trial ids are not unique
# across storages, so the study name and the number identify them)
_HELD: set[tuple[str, int]] = set()

_SAMPLER_DEFAULTS: dict[str, dict[str, Any]] = {
    "tpe": {"multivariate": True},
    "cmaes": {},
    "gp": {},
    "qmc": {"scramble": True},  # unscrambled, Optuna's QMC ignores the seed: every seed the same points
    "random": {},
    "grid": {},
}


SLOW_SUGGESTS = 3  # suggestions in a row slower than optimizer.max_suggest_s hand a run to TPE
HANDOVER_ATTR = "sd_optim.sampler_handover"  # {"trial": N, "from": name, "seconds": s}


def hand_over_if_slow(study: optuna.Study, slow: list[float], seconds: float, limit: float, name: str,
                      seed: int | None, distributions) -> str:
    """``seconds``, the latest suggestion's time, into ``slow`` (the slow ones in a row); after
    :data:`SLOW_SUGGESTS` of them over ``limit`` the study's sampler becomes TPE (multivariate,
    seeded past the trials it has) and the why is returned ("" otherwise). TPE itself is not
    handed over, nor anything when ``limit`` is 0."""
    if not limit or name == "tpe":
        return ""
    slow[:] = [*slow, seconds] if seconds > limit else []
    if len(slow) < SLOW_SUGGESTS:
        return ""
    number = len(study.get_trials(deepcopy=False))
    study.sampler = make_sampler("tpe", {}, None if seed is None else seed + number, distributions)
    study.set_user_attr(HANDOVER_ATTR, {"trial": number, "from": name, "seconds": [round(s, 3) for s in slow]})
    note = (f"{name} took over {limit:g} s to suggest {len(slow)} trials in a row "
            f"({', '.join(f'{s:.2f}' for s in slow)} s): TPE suggests from trial {number} on")
    slow.clear()
    log.warning("%s", note)
    return note


def chosen_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    """The study's result: the winner of its confirmation stage (``optimizer.confirm_top``) when it
    had one, else its best trial (:func:`best_trial`); ValueError when no trial completed."""
    winner = (study.user_attrs.get(CONFIRM_ATTR) or {}).get("winner")
    trials = study.get_trials(deepcopy=False)
    if isinstance(winner, int) and 0 <= winner < len(trials) and trials[winner].state == optuna.trial.TrialState.COMPLETE:
        return trials[winner]
    return best_trial(study)


# --- several objectives (scoring.objectives) -------------------------------------------------

def trial_value(t: optuna.trial.FrozenTrial) -> float | None:
    """A trial's one number: its value, or with several objectives their mean (the balanced
    value: the trial with the highest is on the Pareto front); None without values."""
    if t.values is None:
        return None
    return t.values[0] if len(t.values) == 1 else sum(t.values) / len(t.values)


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    """The best trial: Optuna's, or with several objectives the completed one whose balanced value
    (:func:`trial_value`) is highest, the lowest number on a tie; ValueError when none completed."""
    if len(study.directions) == 1:
        return study.best_trial
    done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if t.values is not None and all(math.isfinite(v) for v in t.values)]
    if not done:
        raise ValueError(f"study {study.study_name!r} has no completed trial")
    return max(done, key=lambda t: (trial_value(t), -t.number))


def objective_names(study: optuna.Study) -> list[str]:
    """The names of the study's objectives (``scoring.objectives``); ["value"] for one."""
    names = study.metric_names
    if names and len(names) == len(study.directions):
        return list(names)
    return ["value"] if len(study.directions) == 1 else [f"objective {i}" for i in range(len(study.directions))]


def pareto_front(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The trials no other completed trial beats on every objective, by number; [] for a study of
    one objective."""
    if len(study.directions) == 1:
        return []
    return sorted(study.best_trials, key=lambda t: t.number)


def _create(name: str, storage, sampler: optuna.samplers.BaseSampler, fingerprint: dict[str, Any]) -> optuna.Study:
    """A new study maximizing one value, or each of the fingerprint's objectives (named after them)."""
    objectives = list(fingerprint.get("objectives") or [])
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler,
                                directions=["maximize"] * max(1, len(objectives)))
    if len(objectives) > 1:
        with warnings.catch_warnings():  # experimental since Optuna 3.2, still in 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(objectives)
    return study


STARTUP_SIZED = ("tpe", "gp")  # samplers whose random start-up trials are sized to the budget
STARTUP_MAX = 10  # Optuna's own number for TPE and GP


def startup_trials(budget: int, params: int) -> int:
    """The random trials a model-based sampler starts with, sized to the run: a fifth of the
    budget, at most Optuna's 10 and at most one more than the parameters (a few parameters need
    few points), at least 3. 20 trials of 27 parameters: 4; 50 or more: 10."""
    return max(3, min(STARTUP_MAX, budget // 5, params + 1))


def make_sampler(name: str, options: dict[str, Any], seed: int | None,
                 distributions: dict[str, optuna.distributions.BaseDistribution], budget: int | None = None
                 ) -> optuna.samplers.BaseSampler:
    """The sampler by config name, or a sampler class by import path, with its options
    (``optimizer.sampler_options``). ``budget``, the trials of the run: TPE's and GP's start-up
    trials are sized to it (:func:`startup_trials`) unless the options set ``n_startup_trials``."""
    if name not in _SAMPLER_DEFAULTS:
        return _sampler_by_path(name, options, seed, distributions)
    opts = {**_SAMPLER_DEFAULTS[name], **options}
    if name in STARTUP_SIZED and budget and "n_startup_trials" not in options:
        opts["n_startup_trials"] = startup_trials(budget, len(distributions))
    classes = {
        "tpe": optuna.samplers.TPESampler,
        "cmaes": optuna.samplers.CmaEsSampler,
        "gp": getattr(optuna.samplers, "GPSampler", None),
        "qmc": optuna.samplers.QMCSampler,
        "random": optuna.samplers.RandomSampler,
        "grid": optuna.samplers.GridSampler,
    }
    cls = classes[name]
    if cls is None:
        raise ConfigError([Problem("optimizer.sampler", "gp needs a newer Optuna, got "
                                                        f"{optuna.__version__}")])
    if name == "grid":
        points = opts.pop("points", 5)
        if isinstance(points, bool) or not isinstance(points, int) or points < 2:
            raise ConfigError([Problem("optimizer.sampler_options.points", "must be an integer >= 2", points)])
        opts.setdefault("search_space", _grid(distributions, points))
    problems = option_problems(cls, {k: v for k, v in options.items() if not (name == "grid" and k == "points")})
    if problems:
        raise ConfigError(problems)
    try:
        sampler = cls(seed=seed, **opts)
        _probe(cls(seed=seed, **opts), distributions)
    except Exception as e:  # noqa: BLE001 - any failure here would otherwise fail every trial
        field, what = ("optimizer.sampler_options", f"not accepted by {cls.__name__}") if options \
            else ("optimizer.sampler", f"{cls.__name__} cannot sample this search space")
        raise ConfigError([Problem(field, f"{what}: {type(e).__name__}: {e}", options or name)]) from None
    return sampler


_PRUNER_DEFAULTS: dict[str, dict[str, Any]] = {
    "median": {},
    "percentile": {"percentile": 25.0},  # Optuna has no default: pruned when in the lowest quarter
    "halving": {},
}


def make_pruner(name: str, options: dict[str, Any], prompt_sets: int) -> optuna.pruners.BasePruner | None:
    """The pruner by config name (``optimizer.pruner``) with its options; None for ``none``. A
    trial's steps are its prompt sets: with one set there is nothing to stop early."""
    if name == "none":
        if options:
            raise ConfigError([Problem("optimizer.pruner_options", "set, but optimizer.pruner is none", options)])
        return None
    if prompt_sets < 2:
        raise ConfigError([Problem("optimizer.pruner", "a pruner stops a trial between its prompt sets: "
                                                       f"it needs 2 or more, this run has {prompt_sets}", name)])
    cls = {"median": optuna.pruners.MedianPruner, "percentile": optuna.pruners.PercentilePruner,
           "halving": optuna.pruners.SuccessiveHalvingPruner}[name]
    problems = option_problems(cls, options, "optimizer.pruner_options")
    if problems:
        raise ConfigError(problems)
    try:
        return cls(**{**_PRUNER_DEFAULTS[name], **options})
    except Exception as e:  # noqa: BLE001 - a value of the right type out of its range
        raise ConfigError([Problem("optimizer.pruner_options", f"not accepted by {cls.__name__}: "
                                                               f"{type(e).__name__}: {e}", options)]) from None


def sampler_class(path: str) -> type:
    """The sampler class ``package.module.Class`` (or ``package.module:Class``) names, imported;
    a :class:`ConfigError` naming ``optimizer.sampler`` when it cannot be imported or is not an
    Optuna sampler."""
    module_name, _, attr = path.replace(":", ".").rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - not installed, or failing on import
        raise ConfigError([Problem("optimizer.sampler", f"cannot import {module_name!r} "
                                                        f"({type(e).__name__}: {e}); is its package installed "
                                                        "in this Python?", path)]) from None
    cls = getattr(module, attr, None)
    if cls is None:
        raise ConfigError([Problem("optimizer.sampler", f"module {module_name!r} has no {attr!r}", path)])
    if not (isinstance(cls, type) and issubclass(cls, optuna.samplers.BaseSampler)):
        raise ConfigError([Problem("optimizer.sampler", "not an Optuna sampler (a subclass of "
                                                        "optuna.samplers.BaseSampler)", path)])
    return cls


def _sampler_by_path(path: str, options: dict[str, Any], seed: int | None,
                     distributions: dict[str, optuna.distributions.BaseDistribution]) -> optuna.samplers.BaseSampler:
    """A sampler class named by import path, made with ``options`` and ``seed`` (when it takes one)."""
    cls = sampler_class(path)
    problems = option_problems(cls, options)
    if problems:
        raise ConfigError(problems)
    takes_seed = "seed" in inspect.signature(cls.__init__).parameters
    if seed is not None and not takes_seed:
        log.warning("optimizer.seed: %s takes no seed; its trials are not repeatable", path)
    kwargs = {**options, **({"seed": seed} if takes_seed else {})}
    try:
        sampler = cls(**kwargs)
        _probe(cls(**kwargs), distributions)
    except Exception as e:  # noqa: BLE001 - any failure here would otherwise fail every trial
        field = "optimizer.sampler_options" if options else "optimizer.sampler"
        raise ConfigError([Problem(field, f"{cls.__name__} refused it: {type(e).__name__}: {e}",
                                   options or path)]) from None
    return sampler


def _probe(sampler: optuna.samplers.BaseSampler, distributions) -> None:
    """One ask on a throwaway in-memory study: an option of the right type and a wrong value
    (optuna checks most only when sampling) fails here, before any file is created."""
    if not distributions:
        return
    quiet = logging.getLogger(optuna.storages.InMemoryStorage.__module__)  # it logs every new study
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        study = optuna.create_study(sampler=sampler, direction="maximize")
    finally:
        quiet.setLevel(level)
    study.ask(distributions)


_SIMPLE = {
    "int": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "float": ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "str": ("a string", lambda v: isinstance(v, str)),
    "None": ("null", lambda v: v is None),
}


def option_problems(cls, options: dict[str, Any], section: str = "optimizer.sampler_options") -> list[str]:
    """``optimizer.sampler_options`` (or ``section``) against the class's ``__init__``: unknown names,
    and values whose type its annotation rules out (simple annotations only: int, float, bool, str,
    None)."""
    signature = inspect.signature(cls.__init__).parameters
    params = {n: p for n, p in signature.items()
              if n not in ("self", "seed") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    open_ended = any(p.kind == p.VAR_KEYWORD for p in signature.values())  # **kwargs: any name
    problems = []
    for name, value in options.items():
        where = f"{section}.{name}"
        if name not in params and open_ended:
            continue
        if name not in params:
            near = difflib.get_close_matches(name, list(params), n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            problems.append(Problem(where, f"not an option of {cls.__name__} ({hint}options: "
                                           f"{', '.join(params)})"))
            continue
        kinds = _annotation_kinds(params[name].annotation)
        if kinds and not any(_SIMPLE[k][1](value) for k in kinds):
            want = " or ".join(_SIMPLE[k][0] for k in kinds)
            problems.append(Problem(where, f"must be {want} ({cls.__name__} takes {' | '.join(kinds)})", value))
    return problems


def _annotation_kinds(annotation) -> list[str]:
    """``'int | None'`` -> ["int", "None"]; [] when any part is not a simple type."""
    if isinstance(annotation, type):
        annotation = annotation.__name__
    if not isinstance(annotation, str):
        return []
    text = annotation.replace("Optional[", "None | ").rstrip("]") if annotation.startswith("Optional[") \
        else annotation
    kinds = [k.strip() for k in text.split("|")]
    return kinds if all(k in _SIMPLE for k in kinds) else []


def _grid(distributions, points: int) -> dict[str, list]:
    grid = {}
    for name, d in distributions.items():
        if isinstance(d, optuna.distributions.CategoricalDistribution):
            grid[name] = list(d.choices)
        elif isinstance(d, optuna.distributions.IntDistribution):
            grid[name] = list(range(d.low, d.high + 1, d.step))
        else:
            grid[name] = [d.low + (d.high - d.low) * i / (points - 1) for i in range(points)]
    return grid


def _postgresql_through_psycopg() -> None:
    """``postgresql://`` URLs work with psycopg 3 (what ``install.py`` installs: binary wheels),
    not only with psycopg2, SQLAlchemy's default driver for them; ``postgres://`` (Heroku-style)
    too. Only where psycopg2 is missing: a process that has it keeps SQLAlchemy's default."""
    import importlib.util

    if importlib.util.find_spec("psycopg2") is None and importlib.util.find_spec("psycopg") is not None:
        from sqlalchemy.dialects import registry

        for name in ("postgresql", "postgres"):
            registry.register(name, "sqlalchemy.dialects.postgresql.psycopg", "dialect")


_postgresql_through_psycopg()


def storage_url(storage: str, run_root: Path) -> str:
    """The storage URL: the one given, or SQLite ``study.db`` in the run folder."""
    if storage:
        return storage
    return f"sqlite:///{(run_root / 'study.db').resolve()}"


def study_name(requested: str, method_or_recipe: str, model_names: list[str]) -> str:
    if requested:
        return check_study_name("optimizer.study", requested)
    base = "-".join([method_or_recipe, *model_names])
    derived = re.sub(r"[^A-Za-z0-9_.-]+", "_", base)[:80].strip(".-")
    return derived if not name_problem(derived) else "study"


def check_study_name(field: str, name: str) -> str:
    """A study name is its run folder's name: letters, digits, '.', '_', '-', one safe path
    component (not '.', '..', nor starting with '.' or '-')."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ConfigError([Problem(field, "use letters, digits, '.', '_' and '-' only", name)])
    return safe_component(field, name)


def new_study_folder(out: Path, name: str, *, explicit: bool, storage: str = "") -> str:
    """The name of a new study whose run folder ``out/<name>`` is new or empty: a new study never
    writes into another run's folder. A derived name is numbered (``name-2``, ``name-3``...) past
    the folders and studies already there; a name the user chose is refused instead (a folder
    whose study.db holds that study is left to :func:`open_study`, which says to resume it)."""
    candidate, n = name, 1
    while True:
        folder = out / candidate
        empty_dir = folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir())
        used = os.path.lexists(folder) and not empty_dir
        taken = bool(storage) and candidate in [s.study_name for s in existing_studies(storage)]
        if not (used or taken):
            return candidate
        if explicit:
            db = folder / "study.db"
            if taken or (not storage and db.exists() and candidate in
                         [s.study_name for s in existing_studies(storage_url("", folder))]):
                return candidate  # open_study refuses with "already exists; resume or fork it"
            raise ConfigError([Problem("optimizer.study", f"the folder {str(folder)!r} already holds "
                                                          "another run's files; choose another study name "
                                                          "(a new study never writes into it)", name)])
        n += 1
        candidate = f"{name}-{n}"


def read_studies(storage: str, field: str) -> list[optuna.study.StudySummary]:
    """The studies in a storage the user named, without creating anything: a missing SQLite
    file is an error (opening it would create an empty database), as is a URL that fails."""
    db = sqlite_file(storage)
    if db is not None and not db.is_file():
        raise ConfigError([Problem(field, f"no such SQLite database file ({db})", storage)])
    try:
        return optuna.get_all_study_summaries(storage)
    except Exception as e:  # noqa: BLE001 - a bad URL, a missing driver, an unreachable server
        raise ConfigError([Problem(field, f"cannot open {storage!r}: {type(e).__name__}: "
                                          f"{(str(e).splitlines()[0] if str(e) else '')}")]) from None


def existing_studies(storage: str) -> list[optuna.study.StudySummary]:
    try:
        return optuna.get_all_study_summaries(storage)
    except Exception:  # noqa: BLE001 - an empty or new storage has no studies table yet
        return []


def compare_fingerprints(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    diffs = []
    for field in sorted(set(old) | set(new)):
        if old.get(field) != new.get(field):
            diffs.append(f"{field}: study has {_short(old.get(field))}, this run has {_short(new.get(field))}")
    return diffs


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 160 else text[:157] + "..."


def _process_start(pid: int) -> str:
    """When process ``pid`` started (clock ticks since boot), to tell a reused pid from the
    original; "" where /proc is not there to ask."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{_process_start(os.getpid())}"


def claim_trial(trial: optuna.Trial) -> None:
    """Mark a trial as run by this process, so that a later resume can tell a trial whose process
    ended (killed, crashed) from one another process is still running."""
    trial.set_user_attr(OWNER_ATTR, _this_process())
    _HELD.add((trial.study.study_name, trial.number))


def release_trial(study_name: str, number: int) -> None:
    _HELD.discard((study_name, number))


def _stale_reason(owner: str, local_storage: bool) -> str:
    """Why a running trial is stale ("" while its process may still be running it). Trials of
    other machines are theirs to judge (a shared database); a trial nobody claimed is stale in a
    local SQLite file."""
    if not owner:
        return INTERRUPTED if local_storage else ""
    host, _, rest = owner.partition(":")
    pid, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return ""
    if int(pid) == os.getpid() and started == _process_start(os.getpid()):
        return ABANDONED  # this process, and no run of it holds the trial (checked before)
    if os.path.isdir("/proc"):  # the start time is "" once the process is gone, another once reused
        return INTERRUPTED if _process_start(int(pid)) != started else ""
    try:
        import psutil
    except ImportError:
        return ""  # no way to tell here: leave it to the user
    return "" if psutil.pid_exists(int(pid)) else INTERRUPTED


def fail_stale_trials(study: optuna.Study, local_storage: bool) -> list[int]:
    """Trials left running by a process that ended (SIGKILL, a crash) or by a run that could not
    record their end (a full disk), marked failed with the reason; the numbers of those marked."""
    marked = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if (study.study_name, t.number) in _HELD:
            continue
        reason = _stale_reason(t.user_attrs.get(OWNER_ATTR, ""), local_storage)
        if not reason:
            continue
        storage = study._storage
        storage.set_trial_user_attr(t._trial_id, "fail_reason", reason)
        if storage.set_trial_state_values(t._trial_id, state=optuna.trial.TrialState.FAIL):
            marked.append(t.number)
    return marked


def open_study(*, name: str, storage: str, sampler: optuna.samplers.BaseSampler,
               fingerprint: dict[str, Any], resume: bool = False, fork_from: str = "",
               fork_storage: str = "",
               distributions: dict[str, optuna.distributions.BaseDistribution] | None = None,
               ) -> optuna.Study:
    """Create a new study, resume one (refusing a mismatch), or fork one into a new study.

    A fork enqueues the parent's completed parameter sets that fit ``distributions`` (the new
    search space): parameters the new space lacks are dropped, sets with a value outside it are
    skipped."""
    try:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    except Exception as e:  # noqa: BLE001 - a bad URL, a missing driver, an unreachable server
        raise ConfigError([Problem("optimizer.storage", f"cannot open {storage!r}: {type(e).__name__}: "
                                                        f"{e}")]) from None
    if resume:
        if name not in names:
            raise ConfigError([Problem("--resume", f"no study named {name!r} in {storage} (studies: "
                                                   f"{', '.join(names) or 'none'})")])
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        old = study.user_attrs.get(FINGERPRINT_ATTR, {})
        diffs = compare_fingerprints(old, fingerprint)
        if diffs:
            raise StudyMismatchError(name, diffs)
        fail_stale_trials(study, local_storage=storage.startswith("sqlite:"))
        return study
    if name in names:
        raise ConfigError([Problem("optimizer.study", f"a study named {name!r} already exists in {storage}; "
                                                      "resume it (--resume), fork it (--fork) or choose "
                                                      "another name")])
    fork_storage = fork_storage or storage
    parent_names = [s.study_name for s in existing_studies(fork_storage)] if fork_from else []
    if fork_from and fork_from not in parent_names:
        raise ConfigError([Problem("--fork", f"no study named {fork_from!r} in {fork_storage} (studies: "
                                             f"{', '.join(parent_names) or 'none'})")])
    study = _create(name, storage, sampler, fingerprint)
    try:
        _fill_new(study, fingerprint, fork_from, fork_storage, distributions)
    except BaseException:
        discard_study(name, storage)
        raise
    return study


def join_study(*, name: str, storage: optuna.storages.BaseStorage, sampler: optuna.samplers.BaseSampler,
               fingerprint: dict[str, Any]) -> tuple[optuna.Study, bool]:
    """The shared study ``name``, created when no worker has yet (then True); a worker that joins
    is refused when what it runs differs from what the study stores. Called under the study's
    lock (``shared.StudyLock``): a study is never seen without its fingerprint."""
    try:
        study = _create(name, storage, sampler, fingerprint)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    else:
        study.set_user_attr(FINGERPRINT_ATTR, fingerprint)
        return study, True
    diffs = compare_fingerprints(study.user_attrs.get(FINGERPRINT_ATTR, {}), fingerprint)
    if diffs:
        raise StudyMismatchError(name, diffs, action="join")
    return study, False


def discard_study(name: str, storage: str) -> None:
    """Delete a study this run has just created, when the run is refused right after."""
    try:
        optuna.delete_study(study_name=name, storage=storage)
    except Exception as e:  # noqa: BLE001 - the refusal's own error matters more than the leftover
        logging.getLogger("sd_optim").warning("could not delete the refused study %r: %s", name, e)


def _fill_new(study: optuna.Study, fingerprint: dict[str, Any], fork_from: str, fork_storage: str,
              distributions) -> None:
    study.set_user_attr(FINGERPRINT_ATTR, fingerprint)
    if fork_from:
        parent = optuna.load_study(study_name=fork_from, storage=fork_storage)
        study.set_user_attr("sd_optim.forked_from", fork_from)
        seen = set()
        for t in parent.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
            params = _fitting(t.params, distributions)
            key = json.dumps(params, sort_keys=True)
            if params and key not in seen:
                seen.add(key)
                study.enqueue_trial(params, user_attrs={"sd_optim.forked_trial": t.number},
                                    skip_if_exists=True)


def _fitting(params: dict[str, Any], distributions) -> dict[str, Any]:
    """``params`` restricted to ``distributions``; empty when a value lies outside its range."""
    if distributions is None:
        return dict(params)
    out = {}
    for name, value in params.items():
        d = distributions.get(name)
        if d is None:
            continue
        try:
            if not d._contains(d.to_internal_repr(value)):
                return {}
        except (ValueError, TypeError):
            return {}
        out[name] = value
    return out
