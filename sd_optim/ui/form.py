"""The tab's set-up controls as plain values, and their two-way mapping to the run config.

No gradio here: the tab hands :func:`form_to_data` a dict of control values and gets back the
YAML data of a run config (the CLI's format); :func:`data_to_form` goes the other way when a
config file is loaded. Tables are lists of rows (``gr.Dataframe(type="array")``); a cell the
user left empty means "the default" and is left out of the config, and a cell that does not
parse is passed on as written, so the config's validation names the field and the bad value.
"""

from __future__ import annotations

import dataclasses
import glob
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ..config import (
    AfterRun,
    EarlyStopping,
    Guide,
    MergeSettings,
    OptimizerSettings,
    Payload,
    RecipeSettings,
    RunConfig,
    ScoringSettings,
    safe_yaml,
)
from ..config.model import field_text
from ..config.reader import ConfigReader
from ..errors import ConfigError, Problem, as_problem

LORA_COLUMNS = ["path", "apply to", "strength"]
FIXED_COLUMNS = ["hyperparameter", "value"]
SITE_COLUMNS = ["site", "value in recipe", "tune", "low", "high"]
STRATEGY_COLUMNS = ["component", "strategy", "items", "patterns", "groups", "params", "fixed"]
BOUNDS_COLUMNS = ["name", "low", "high", "log", "step", "choices", "fixed"]
PAYLOAD_COLUMNS = ["name", "prompt", "negative prompt", "seed", "steps", "cfg", "sampler", "scheduler",
                   "width", "height", "images", "weight", "scorers"]
SCORER_COLUMNS = ["scorer", "weight", "options"]  # which are used: the "scorer_use" ticks

# payload table column -> (config key, kind)
_PAYLOAD_FIELDS = [("name", "str"), ("prompt", "str"), ("negative_prompt", "str"), ("seed", "int"),
                   ("steps", "int"), ("cfg_scale", "float"), ("sampler", "str"), ("scheduler", "str"),
                   ("width", "int"), ("height", "int"), ("batch_size", "int"), ("weight", "float"),
                   ("scorers", "list")]

START_AS = ("new study", "resume", "fork", "join")

# every control of the set-up panels, with its starting value: the run config's own default where
# the config has one (config/model.py is the one source), empty where a control starts empty
_MERGE, _GUIDE, _SCORING = MergeSettings(), Guide(), ScoringSettings()
_OPT, _STOP, _AFTER = OptimizerSettings(), EarlyStopping(), AfterRun()
FORM_DEFAULTS: dict[str, Any] = {
    # models
    "models": [], "model_names": {}, "base_model": "", "host_model": "", "diffusers_config": "",
    "loras": [],
    # mode
    "mode": RunConfig.mode, "merge_precision": RunConfig.merge_precision, "method": _MERGE.method, "fixed": [],
    "recipe_path": "", "recipe_sites": [],
    "recipe_include": " ".join(_GUIDE.recipe_include), "recipe_exclude": " ".join(_GUIDE.recipe_exclude),
    # guide
    "strategies": [], "bounds": [], "blocks": _GUIDE.blocks,
    # prompt sets
    "payloads": [], "wildcards_dir": "", "blocks_dir": "",
    # scorers
    "scorers": [], "scorer_use": [], "scorer_mean": _SCORING.scorer_mean, "payload_mean": _SCORING.payload_mean,
    "normalize": _SCORING.normalize, "vram_gb": _SCORING.vram_gb, "objectives": "",
    # optimizer
    "sampler": _OPT.sampler, "sampler_options": "", "trials": _OPT.trials,
    "pruner": _OPT.pruner, "pruner_options": "", "confirm_top": _OPT.confirm_top,
    "seed": "" if _OPT.seed is None else _OPT.seed, "max_suggest_s": _OPT.max_suggest_s, "patience": _STOP.patience,
    "min_improvement": _STOP.min_improvement, "baseline": list(_OPT.baseline),
    "start_from": "", "start_from_study": _OPT.start_from_study, "coarse_trials": _OPT.coarse_trials,
    "score_inputs": _OPT.score_inputs, "on_trial_error": _OPT.on_trial_error,
    "storage": _OPT.storage, "study": _OPT.study, "start_as": START_AS[0], "source_study": "",
    "keep_best": _AFTER.keep_best, "save_best": _AFTER.save_best, "save_name": _AFTER.save_name,
    # empty: the WebUI's (or the app's) own folders and device
    "output_dir": "", "models_dir": "", "device": "",
}


# control -> the config field it sets, whose metadata holds the control's label and help
CONTROL_FIELDS: dict[str, tuple[type, str]] = {
    "loras": (RunConfig, "loras"), "base_model": (RunConfig, "base_model"),
    "host_model": (RunConfig, "host_model"), "diffusers_config": (RunConfig, "diffusers_config"),
    "mode": (RunConfig, "mode"), "merge_precision": (RunConfig, "merge_precision"),
    "method": (MergeSettings, "method"), "fixed": (MergeSettings, "fixed"),
    "recipe_path": (RecipeSettings, "path"), "recipe_include": (Guide, "recipe_include"),
    "recipe_exclude": (Guide, "recipe_exclude"), "blocks": (Guide, "blocks"),
    "wildcards_dir": (RunConfig, "wildcards_dir"), "blocks_dir": (RunConfig, "blocks_dir"), "scorer_mean": (ScoringSettings, "scorer_mean"),
    "normalize": (ScoringSettings, "normalize"), "vram_gb": (ScoringSettings, "vram_gb"),
    "objectives": (ScoringSettings, "objectives"), "payload_mean": (ScoringSettings, "payload_mean"),
    "models_dir": (RunConfig, "models_dir"),
    "sampler": (OptimizerSettings, "sampler"), "sampler_options": (OptimizerSettings, "sampler_options"),
    "pruner": (OptimizerSettings, "pruner"), "pruner_options": (OptimizerSettings, "pruner_options"),
    "confirm_top": (OptimizerSettings, "confirm_top"),
    "trials": (OptimizerSettings, "trials"), "seed": (OptimizerSettings, "seed"),
    "max_suggest_s": (OptimizerSettings, "max_suggest_s"),
    "patience": (EarlyStopping, "patience"), "min_improvement": (EarlyStopping, "min_improvement"),
    "baseline": (OptimizerSettings, "baseline"), "score_inputs": (OptimizerSettings, "score_inputs"),
    "start_from": (OptimizerSettings, "start_from"), "start_from_study": (OptimizerSettings, "start_from_study"),
    "coarse_trials": (OptimizerSettings, "coarse_trials"),
    "on_trial_error": (OptimizerSettings, "on_trial_error"), "study": (OptimizerSettings, "study"),
    "storage": (OptimizerSettings, "storage"), "keep_best": (AfterRun, "keep_best"),
    "save_best": (AfterRun, "save_best"), "save_name": (AfterRun, "save_name"),
    "output_dir": (RunConfig, "output_dir"), "device": (RunConfig, "device"),
}


def control_label(key: str, help: str | None = None) -> str:
    """The label a set-up control shows: the config field's label and, in brackets, its one-line
    help (``help`` replaces it where the host knows better, e.g. which folder empty means)."""
    label, default_help = field_text(*CONTROL_FIELDS[key])
    help = default_help if help is None else help
    return f"{label} ({help})" if help else label


def payload_defaults(name: str = "", prompt: str = "") -> dict[str, Any]:
    """A new prompt set's values (the config keys of ``payloads[i]``), from the config's defaults."""
    return dataclasses.asdict(Payload(name=name, prompt=prompt))


def payload_row(values: dict[str, Any]) -> list[Any]:
    """A prompt set's values (as :func:`payload_defaults` gives them) as a row of the prompt-set table."""
    return [_fmt_words(values.get(key) or []) if kind == "list" else values.get(key, "")
            for key, kind in _PAYLOAD_FIELDS]


def payload_values(row: list[Any]) -> dict[str, Any]:
    """A row of the prompt-set table by config key, its cells as they are (the inverse of
    :func:`payload_row`; the list of scorers as a list of names)."""
    return {key: words(_cell(row, i)) if kind == "list" else _cell(row, i)
            for i, (key, kind) in enumerate(_PAYLOAD_FIELDS)}


def payload_names(table: Any) -> list[str]:
    """The prompt sets' names, in the table's order."""
    return [str(_cell(row, 0) or "").strip() for row in filled_rows(table)]


def free_payload_name(table: Any) -> str:
    """``set<N>``: the first such name after the table's rows that no row has."""
    names, n = set(payload_names(table)), len(filled_rows(table))
    while f"set{n}" in names:
        n += 1
    return f"set{n}"


FIELDS = list(FORM_DEFAULTS)


# --- cell parsing ---------------------------------------------------------------------------

def _blank(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x)) or (isinstance(x, str) and not x.strip())


def _number(x: Any, integer: bool = False) -> Any:
    """A cell as a number when it reads as one, else as written (validation names it)."""
    if isinstance(x, bool):
        return x
    if isinstance(x, (int, float)):
        return int(x) if integer and float(x).is_integer() else x
    text = str(x).strip()
    try:
        value = float(text)
    except ValueError:
        return text
    if integer and value.is_integer():
        return int(value)
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def _bool(x: Any) -> bool:
    if isinstance(x, str):
        return x.strip().lower() in ("true", "yes", "1", "on", "x", "✓")
    return bool(x) and not _blank(x)


def words(x: Any) -> list[str]:
    if _blank(x):
        return []
    return [w for w in str(x).replace(",", " ").split() if w]


def _scalar(x: Any) -> Any:
    """A fixed value: a number when it reads as one, ``None`` for empty/null, else the text."""
    if _blank(x) or (isinstance(x, str) and x.strip().lower() in ("null", "none", "~")):
        return None
    return _number(x)


def _pairs(x: Any) -> dict[str, Any]:
    """``"alpha=0.5, beta: 1"`` as a dict (a part without = or : keeps an empty value, which
    validation names)."""
    out: dict[str, Any] = {}
    if _blank(x):
        return out
    for part in str(x).split(","):
        if not part.strip():
            continue
        cut = min((i for i in (part.find("="), part.find(":")) if i >= 0), default=-1)
        key, value = (part[:cut], part[cut + 1:]) if cut >= 0 else (part, "")
        out[key.strip()] = _scalar(value) if value.strip() else value.strip()
    return out


def _flow_mapping(text: Any) -> Any:
    """Options cells hold a YAML mapping without braces: ``folder: refs, sharpness: 2``."""
    if _blank(text):
        return {}
    text = str(text).strip()
    try:
        value = safe_yaml.load(text if text.startswith("{") else "{" + text + "}", "options")
    except ConfigError:
        return text  # the config reader says "must be a mapping, got '...'"
    return value if value is not None else {}


def objectives_data(text: Any) -> dict[str, list[str]]:
    """The Objectives box, one ``name: scorer, scorer`` per line, as ``scoring.objectives`` (a
    line without a colon is a name without scorers: the config reader says so)."""
    out: dict[str, list[str]] = {}
    for line in str(text or "").splitlines():
        if not line.strip():
            continue
        name, _, scorers = line.partition(":")
        out[name.strip()] = [s.strip() for s in scorers.split(",") if s.strip()]
    return out


def _groups(x: Any) -> Any:
    """``in: IN00 IN01; out: OUT*`` as {"in": [...], "out": [...]}."""
    out: dict[str, list[str]] = {}
    if _blank(x):
        return out
    for part in str(x).split(";"):
        if not part.strip():
            continue
        name, sep, pats = part.partition(":")
        if not sep:
            return str(x)  # not "name: patterns": the config reader reports it
        out[name.strip()] = words(pats)
    return out


def _fmt(x: Any) -> Any:
    return "" if x is None else x


def _fmt_words(items: list[str]) -> str:
    return ", ".join(items)


def _fmt_pairs(d: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items())


def _fmt_mapping(d: dict[str, Any]) -> str:
    if not d:
        return ""
    text = yaml.safe_dump(d, default_flow_style=True, sort_keys=False, width=10**6).strip()
    return text[1:-1].strip() if text.startswith("{") else text


def filled_rows(table: Any) -> list[list[Any]]:
    """Table rows without the entirely empty ones a Dataframe keeps at its end."""
    if table is None:
        return []
    if hasattr(table, "values") and hasattr(table, "columns"):  # a pandas DataFrame
        table = table.values.tolist()
    return [list(r) for r in table if not all(_blank(c) for c in r)]


def _cell(row: list[Any], i: int) -> Any:
    return row[i] if i < len(row) else None


# --- form -> config data ----------------------------------------------------------------------

def form_to_data(form: dict[str, Any], path_for: Callable[[str], str] = str) -> dict[str, Any]:
    """The run config's YAML data from the control values; ``path_for`` turns a checkpoint
    choice (the WebUI's title) into its file path."""
    f = {**FORM_DEFAULTS, **form}
    data: dict[str, Any] = {"mode": f["mode"], "merge_precision": f["merge_precision"]}
    names = dict(f["model_names"] or {})
    models, used = [], set()
    for choice in f["models"] or []:
        path = path_for(choice)
        name = names.get(_key(path)) or names.get(path) or _unique(Path(path).stem, used)
        used.add(name)
        models.append({"path": path, "name": name})
    data["models"] = models
    for key in ("base_model", "host_model", "diffusers_config", "wildcards_dir", "blocks_dir", "output_dir",
                "models_dir", "device"):
        if not _blank(f[key]):
            data[key] = str(f[key]).strip()
    loras = []
    for row in filled_rows(f["loras"]):
        lora: dict[str, Any] = {"path": str(_fmt(_cell(row, 0))).strip()}
        if not _blank(_cell(row, 1)):
            lora["apply_to"] = str(_cell(row, 1)).strip()
        if not _blank(_cell(row, 2)):
            lora["strength"] = _number(_cell(row, 2))
        loras.append(lora)
    if loras:
        data["loras"] = loras
    if f["mode"] == "recipe":
        data["recipe"] = {"path": str(f["recipe_path"]).strip()}
    else:
        data["merge"] = {"method": f["method"],
                         "fixed": {str(r[0]).strip(): _scalar(_cell(r, 1)) for r in filled_rows(f["fixed"])}}
    data["guide"] = _guide_data(f)
    data["payloads"] = [_payload(row) for row in filled_rows(f["payloads"])]
    ticked = set(f["scorer_use"] or [])
    data["scorers"] = [_scorer(row) for row in filled_rows(f["scorers"]) if scorer_name(row) in ticked]
    data["scoring"] = {"scorer_mean": f["scorer_mean"], "payload_mean": f["payload_mean"],
                       "normalize": bool(f["normalize"])}
    if not _blank(f["vram_gb"]):
        data["scoring"]["vram_gb"] = _number(f["vram_gb"])
    objectives = objectives_data(f["objectives"])
    if objectives:
        data["scoring"]["objectives"] = objectives
    data["optimizer"] = _optimizer_data(f)
    data["after_run"] = {"keep_best": bool(f["keep_best"]), "save_best": bool(f["save_best"])}
    if not _blank(f["save_name"]):
        data["after_run"]["save_name"] = str(f["save_name"]).strip()
    return data


def _key(path: str) -> str:
    """Model names are remembered by the file itself, however its path is spelled."""
    return os.path.realpath(os.path.expanduser(path))


def _unique(stem: str, used: set[str]) -> str:
    name, n = stem, 1
    while name in used:
        n += 1
        name = f"{stem}-{n}"
    return name


def _guide_data(f: dict[str, Any]) -> dict[str, Any]:
    guide: dict[str, Any] = {}
    for row in filled_rows(f["strategies"]):
        comp = str(_fmt(_cell(row, 0))).strip()
        s: dict[str, Any] = {"strategy": str(_fmt(_cell(row, 1))).strip()}
        if not _blank(_cell(row, 2)):
            s["items"] = str(_cell(row, 2)).strip()
        for col, key, parse in ((3, "patterns", words), (4, "groups", _groups), (5, "params", words)):
            value = parse(_cell(row, col))
            if value:
                s[key] = value
        fixed = _pairs(_cell(row, 6))
        if fixed:
            s["fixed"] = fixed
        guide.setdefault(comp, []).append(s)
    bounds: dict[str, Any] = {}
    for row in filled_rows(f["bounds"]):
        bounds[str(_fmt(_cell(row, 0))).strip()] = _bounds_entry(row[1:])
    include, exclude = words(f["recipe_include"]) or ["*"], words(f["recipe_exclude"])
    if f["mode"] == "recipe":
        sites = filled_rows(f["recipe_sites"])
        if sites:
            tuned = [str(r[0]) for r in sites if _bool(_cell(r, 2))]
            if tuned != selected_sites([str(r[0]) for r in sites], include, exclude):
                # site names hold brackets ("&5.alpha[IN04]"): escaped, they match only themselves
                include, exclude = [glob.escape(t) for t in tuned] or ["-"], []  # "-": no site
            for r in sites:
                entry = _bounds_entry([_cell(r, 3), _cell(r, 4)])
                if entry:
                    bounds[str(r[0])] = {**bounds.get(str(r[0]), {}), **entry}
        guide["recipe"] = {"include": include, "exclude": exclude}
    if bounds:
        guide["bounds"] = bounds
    if not _blank(f["blocks"]):
        guide["blocks"] = str(f["blocks"]).strip()
    return guide


def selected_sites(sites: list[str], include: list[str], exclude: list[str]) -> list[str]:
    """The sites ``guide.recipe`` selects, matched as recipe mode does: against the site's name
    (``&5.alpha[IN04]``), its node (``&5``) and its parameter (``alpha``). (Recipe mode also
    matches the method's name, which a site's name does not hold.)"""
    import fnmatch

    def hit(name, patterns):
        node, _, rest = name.partition(".")
        parts = (name, node, rest.split("[", 1)[0])
        return any(fnmatch.fnmatchcase(x, p) for p in patterns for x in parts)

    return [s for s in sites if hit(s, include) and not hit(s, exclude)]


def _bounds_entry(cells: list[Any]) -> dict[str, Any]:
    keys = ("low", "high", "log", "step", "choices", "fixed")
    entry: dict[str, Any] = {}
    for key, cell in zip(keys, cells):
        if _blank(cell) or (key == "log" and not _bool(cell)):
            continue
        if key == "log":
            entry[key] = True
        elif key == "choices":
            entry[key] = [_number(w) for w in words(cell)]
        else:
            entry[key] = _number(cell)
    return entry


def _payload(row: list[Any]) -> dict[str, Any]:
    p: dict[str, Any] = {}
    for i, (key, kind) in enumerate(_PAYLOAD_FIELDS):
        cell = _cell(row, i)
        if _blank(cell):
            continue
        if kind == "str":
            p[key] = str(cell)
        elif kind == "list":
            p[key] = words(cell)
        else:
            p[key] = _number(cell, integer=kind == "int")
    return p


def scorer_name(row: list[Any]) -> str:
    """The scorer a row of the scorer table names."""
    return str(_fmt(_cell(row, 0))).strip()


def scorer_names(table: Any) -> list[str]:
    """The scorers the table names, each once, in its order: the choices of the "use" ticks."""
    return list(dict.fromkeys(n for n in map(scorer_name, filled_rows(table)) if n))


def _scorer(row: list[Any]) -> dict[str, Any]:
    s: dict[str, Any] = {"name": scorer_name(row)}
    if not _blank(_cell(row, 1)):
        s["weight"] = _number(_cell(row, 1))
    options = _flow_mapping(_cell(row, 2))
    if options:
        s["options"] = options
    return s


def _optimizer_data(f: dict[str, Any]) -> dict[str, Any]:
    opt: dict[str, Any] = {"sampler": f["sampler"]}
    if not _blank(f["trials"]):
        opt["trials"] = _number(f["trials"], integer=True)
    options = _flow_mapping(f["sampler_options"])
    if options:
        opt["sampler_options"] = options
    if f["pruner"] != _OPT.pruner:
        opt["pruner"] = f["pruner"]
    pruner_options = _flow_mapping(f["pruner_options"])
    if pruner_options:
        opt["pruner_options"] = pruner_options
    if not _blank(f["confirm_top"]) and f["confirm_top"] != _OPT.confirm_top:
        opt["confirm_top"] = _number(f["confirm_top"], integer=True)
    if not _blank(f["coarse_trials"]) and f["coarse_trials"] != _OPT.coarse_trials:
        opt["coarse_trials"] = _number(f["coarse_trials"], integer=True)
    if not _blank(f["seed"]):
        opt["seed"] = _number(f["seed"], integer=True)
    if not _blank(f["max_suggest_s"]) and f["max_suggest_s"] != _OPT.max_suggest_s:
        opt["max_suggest_s"] = _number(f["max_suggest_s"])
    if not _blank(f["storage"]):
        opt["storage"] = str(f["storage"]).strip()
    if not _blank(f["study"]):
        opt["study"] = str(f["study"]).strip()
    patience = _number(f["patience"] if not _blank(f["patience"]) else 0, integer=True)
    min_imp = _number(f["min_improvement"] if not _blank(f["min_improvement"]) else 0.0)
    if patience or min_imp:
        opt["early_stopping"] = {"patience": patience, "min_improvement": min_imp}
    if f["baseline"]:
        opt["baseline"] = list(f["baseline"])
    points = [_flow_mapping(line) for line in str(f["start_from"] or "").splitlines() if line.strip()]
    if points:
        opt["start_from"] = points
    if not _blank(f["start_from_study"]):
        opt["start_from_study"] = str(f["start_from_study"]).strip()
    if f["score_inputs"]:
        opt["score_inputs"] = True
    opt["on_trial_error"] = f["on_trial_error"]
    return opt


def start_options(form: dict[str, Any]) -> dict[str, Any]:
    """The study to resume or fork (the CLI's --resume / --fork), or joining the shared study the
    optimizer panel names (storage URL and study name: the CLI's ``worker``), from the start controls."""
    how = form.get("start_as") or "new study"
    # the dropdown shows "name (N trials, best V)"; study names have no spaces
    source = str(form.get("source_study") or "").split(" (", 1)[0].strip()
    if how == "resume":
        return {"resume": source}
    if how == "fork":
        return {"fork": source}
    if how == "join":
        return {"join": True}
    return {}


# --- config data -> form ----------------------------------------------------------------------

def data_to_form(data: dict[str, Any], title_for: Callable[[str], str] = str,
                 sites: Callable[[str], list[tuple[str, Any]]] | None = None) -> dict[str, Any]:
    """Control values from a config's data (as :meth:`RunConfig.to_dict` writes it, or a YAML
    file's own data). ``title_for`` turns a file path into the checkpoint choice shown;
    ``sites`` lists a recipe file's (site, value) pairs for the recipe table."""
    # a set-up saved before it was complete loads back: only "missing" problems are let through
    reader = ConfigReader()
    cfg = reader.run_config(data, ".")
    problems = [p for p in reader.problems if not p.incomplete]  # a set-up being filled in loads
    if problems:
        raise ConfigError(problems)
    f = dict(FORM_DEFAULTS)
    f["models"] = [title_for(m.path) for m in cfg.models]
    f["model_names"] = {_key(m.path): m.name for m in cfg.models if m.name != Path(m.path).stem}
    f["base_model"] = cfg.base_model
    f["host_model"] = cfg.host_model if cfg.models and cfg.host_model != cfg.models[0].name else ""
    f["diffusers_config"] = cfg.diffusers_config
    f["loras"] = [[lo.path, lo.apply_to, lo.strength] for lo in cfg.loras]
    f["mode"] = cfg.mode
    f["method"] = cfg.merge.method
    f["fixed"] = [[k, _fmt(v)] for k, v in cfg.merge.fixed.items()]
    f["recipe_path"] = cfg.recipe.path
    f["recipe_include"] = _fmt_words(cfg.guide.recipe_include)
    f["recipe_exclude"] = _fmt_words(cfg.guide.recipe_exclude)
    bounds = dict(cfg.guide.bounds)
    if cfg.mode == "recipe" and sites is not None and cfg.recipe.path:
        try:
            found = sites(cfg.recipe.path)
        except (OSError, ValueError):
            found = []
        tuned = set(selected_sites([s for s, _ in found], cfg.guide.recipe_include,
                                    cfg.guide.recipe_exclude))
        rows = []
        for name, value in found:
            b = bounds.get(name)
            low_high = [_fmt(b.low), _fmt(b.high)] if b is not None else ["", ""]
            if b is not None and (b.low is not None or b.high is not None):
                rest = {k: v for k, v in vars(b).items() if k not in ("low", "high")}
                if not any(v not in (None, False) for v in rest.values()):
                    bounds.pop(name)
            rows.append([name, value, name in tuned, *low_high])
        f["recipe_sites"] = rows
    f["strategies"], f["bounds"] = _guide_rows(cfg.guide.components, bounds)
    f["blocks"] = cfg.guide.blocks
    f["payloads"] = [[p.name, p.prompt, p.negative_prompt, p.seed, p.steps, p.cfg_scale, p.sampler,
                      p.scheduler, p.width, p.height, p.batch_size, p.weight, _fmt_words(p.scorers)]
                     for p in cfg.payloads]
    f["wildcards_dir"] = cfg.wildcards_dir
    f["blocks_dir"] = cfg.blocks_dir
    f["scorers"] = [[s.name, s.weight, _fmt_mapping(s.options)] for s in cfg.scorers]
    f["scorer_use"] = list(dict.fromkeys(s.name for s in cfg.scorers))
    f["scorer_mean"], f["payload_mean"] = cfg.scoring.scorer_mean, cfg.scoring.payload_mean
    f["normalize"], f["vram_gb"] = cfg.scoring.normalize, cfg.scoring.vram_gb
    f["objectives"] = "\n".join(f"{name}: {', '.join(scorers)}" for name, scorers in cfg.scoring.objectives.items())
    o = cfg.optimizer
    f.update(sampler=o.sampler, sampler_options=_fmt_mapping(o.sampler_options), trials=o.trials,
             pruner=o.pruner, pruner_options=_fmt_mapping(o.pruner_options), confirm_top=o.confirm_top,
             seed="" if o.seed is None else o.seed, max_suggest_s=o.max_suggest_s,
             patience=o.early_stopping.patience,
             min_improvement=o.early_stopping.min_improvement, baseline=list(o.baseline),
             start_from="\n".join(_fmt_mapping(p) for p in o.start_from), start_from_study=o.start_from_study,
             coarse_trials=o.coarse_trials,
             score_inputs=o.score_inputs, on_trial_error=o.on_trial_error, storage=o.storage,
             study=o.study)
    f.update(keep_best=cfg.after_run.keep_best, save_best=cfg.after_run.save_best,
             save_name=cfg.after_run.save_name)
    raw = data if isinstance(data, dict) else {}
    f["output_dir"] = cfg.output_dir if "output_dir" in raw else ""
    f["models_dir"] = cfg.models_dir
    f["device"] = cfg.device if cfg.device != "auto" else ""
    f["merge_precision"] = cfg.merge_precision
    return f


def _guide_rows(components, bounds) -> tuple[list[list[Any]], list[list[Any]]]:
    strategies = [
        [comp, s.strategy, s.items, _fmt_words(s.patterns),
         "; ".join(f"{g}: {' '.join(p)}" for g, p in s.groups.items()),
         _fmt_words(s.params), _fmt_pairs(s.fixed)]
        for comp, items in components.items() for s in items]
    rows = [[name, _fmt(b.low), _fmt(b.high), b.log, _fmt(b.step),
             _fmt_words([str(c) for c in b.choices or []]), _fmt(b.fixed)]
            for name, b in bounds.items()]
    return strategies, rows


def guide_to_form(guide: Any) -> dict[str, Any]:
    """The guide controls from a ``guide:`` section alone (the YAML view's Apply)."""

    reader = ConfigReader()
    g = reader.guide(guide)
    if reader.problems:
        raise ConfigError(reader.problems)
    strategies, bounds = _guide_rows(g.components, g.bounds)
    return {"strategies": strategies, "bounds": bounds, "blocks": g.blocks,
            "recipe_include": _fmt_words(g.recipe_include), "recipe_exclude": _fmt_words(g.recipe_exclude)}


# --- problems -> panels -----------------------------------------------------------------------

PANELS = ("models", "mode", "guide", "payloads", "scorers", "optimizer")
PANEL_TITLES = {"models": "1 · Models", "mode": "2 · Merge method or recipe", "guide": "3 · What to tune (guide)",
                "payloads": "4 · Prompt sets", "scorers": "5 · Scorers", "optimizer": "6 · Optimizer"}
_PANEL_OF = {
    "models": "models", "loras": "models", "base_model": "models", "host_model": "models",
    "diffusers_config": "models", "mode": "mode", "merge": "mode", "recipe": "mode",
    "guide": "guide", "blocks_dir": "guide", "payloads": "payloads", "wildcards_dir": "payloads", "scorers": "scorers",
    "scoring": "scorers", "optimizer": "optimizer", "after_run": "optimizer", "name": "optimizer",
    "output_dir": "optimizer", "models_dir": "scorers", "device": "optimizer", "merge_precision": "mode",
}


def panel_of(problem: Problem | str) -> str:
    """Which set-up panel a problem belongs to, by its field (``payloads[2].steps``: prompt sets);
    "" for text that is no :class:`Problem` (it names no field)."""
    head = as_problem(problem).field.split(".", 1)[0].split("[", 1)[0]
    return _PANEL_OF.get(head, "optimizer" if head.startswith(("--", "study")) else "")


def problems_by_panel(problems: list[Problem | str]) -> dict[str, list[Problem | str]]:
    out: dict[str, list[str]] = {p: [] for p in PANELS}
    out["other"] = []
    for problem in problems:
        out[panel_of(problem) or "other"].append(problem)
    return out
