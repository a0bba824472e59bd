"""``import-config``: an old command-line sd-optim set-up as this project's run config.

The formats read, from the old project's public sources (github.com/Enferlain/sd-optim):

- the main config, ``conf/config.tmpl.yaml`` (its newest form has ``paths`` / ``merge`` /
  ``generation`` / ``scoring`` / ``optimizer`` sections, see
  ``sd_optim/config/dataclasses/*.py``; older forms keep the same keys at the top level, the oldest
  ``merge_mode``, ``model_a`` / ``model_b`` / ``model_c`` and ``optimizer: bayes``);
- the optimization guide, ``conf/optimization_guide/guide.tmpl.yaml``: ``components`` (each a
  ``name``, ``optimize_params`` and ``strategies`` of ``type`` all / select / group / single /
  none with ``target_type``, ``keys`` and ``groups``), ``custom_bounds`` (a scalar fixes a value,
  a list is a set of choices, ``"(low, high)"`` or ``{range: [low, high], step, log}`` a range;
  ``sd_optim/bounds.py``) and ``dependencies``;
- payload files, ``conf/payloads/cargo/<name>.yaml`` (one payload each, under a key that is its
  name) and ``conf/payloads/cargo_<webui>.yaml`` (``defaults: [cargo: [names]]`` choosing them, and
  shared defaults for every field), with A1111 txt2img field names (``sd_optim/prompter.py``).

Its ``bayes`` optimizer (bayes_opt: ``init_points`` random trials, then ``n_iters`` guided ones) maps
to Optuna's GP sampler. What cannot be carried over is listed with why, never dropped in silence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config.safe_yaml import load_config_mapping
from .errors import ConfigError, Problem

# the old project's scorer ids -> ours
SCORERS = {"laion": "laion_aesthetic", "aes": "laion_aesthetic", "chad": "laion_chad", "hpsv2": "hpsv2",
           "hpsv21": "hpsv2_1", "hpsv3": "hpsv3", "pick": "pickscore", "pickscore": "pickscore",
           "imagereward": "image_reward", "ir": "image_reward", "cityaes": "city_aesthetics", "wdaes": "wd_aesthetic",
           "clip": "clip_score", "blip": "blip_itm", "manual": "manual", "noai": None}
SAMPLERS = {"tpe": "tpe", "random": "random", "cmaes": "cmaes", "gp": "gp", "qmc": "qmc", "grid": "grid",
            "nsgaii": "optuna.samplers.NSGAIISampler"}
ADJUST = {"detail1": "detail_in", "detail2": "detail_out", "detail3": "detail_out2", "contrast": "contrast",
          "brightness": "brightness", "col1": "cyan_red", "col2": "magenta_green", "col3": "yellow_blue"}
PAYLOAD_FIELDS = {"prompt": "prompt", "negative_prompt": "negative_prompt", "seed": "seed", "steps": "steps",
                  "cfg_scale": "cfg_scale", "sampler_name": "sampler", "scheduler": "scheduler", "width": "width",
                  "height": "height", "batch_size": "batch_size", "score_weight": "weight"}
# payload fields whose value here changes nothing (their A1111 defaults): not worth a line
NEUTRAL = {"n_iter": 1, "enable_hr": False, "restore_faces": False, "tiling": False, "styles": [], "eta": 0,
           "subseed": -1, "subseed_strength": 0, "s_churn": 0, "s_noise": 1, "s_tmin": 0, "s_tmax": 0,
           "seed_resize_from_h": -1, "seed_resize_from_w": -1, "sampler_index": None}
MEANS = ("arithmetic", "geometric", "quadratic")


@dataclass
class Imported:
    data: dict[str, Any]  # the run config, as its YAML holds it
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (old field, why it was not carried over)

    def drop(self, where: str, why: str) -> None:
        self.dropped.append((where, why))


def read_yaml(path: Path, field_name: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([Problem(field_name, f"cannot be read: {e}", str(path))]) from None
    return load_config_mapping(text, f"{field_name} {path}") or {}


def import_setup(config: dict[str, Any], guide: dict[str, Any] | None, payloads: list[tuple[str, dict[str, Any]]],
                 base_dir: Path) -> Imported:
    """The old ``config`` (and its guide and payloads) as run config data, with what was dropped."""
    out = Imported({})
    section = _sections(config)
    _models(section, out, base_dir)
    _optimizer(section, out)
    _scorers(section, out)
    _payloads(payloads, section, out)
    _guide(guide or section.get("optimization_guide") or {}, section, out)
    for old, new in (("wildcards_dir", "wildcards_dir"), ("scorer_model_dir", "models_dir")):
        if section.get(old):
            out.data[new] = _absolute(section[old], base_dir)
    if section.get("save_best"):
        out.data["after_run"] = {"save_best": True}
    for old in ("url", "webui", "webui_urls", "configs_dir", "conversion_dir", "fallback_model_index",
                "generator_concurrency_limit", "visualizations", "scorer_device", "scorer_alt_location"):
        if section.get(old) not in (None, "", [], {}):
            out.drop(old, _WHY.get(old, "no equivalent here"))
    return out


_WHY = {
    "url": "sd-optim runs inside the WebUI (or with its standalone host): no API URL",
    "webui": "the tab runs in the WebUI it is installed in",
    "webui_urls": "no API URL is used",
    "configs_dir": "sd-mecha block configs by code are not read; write block definitions (blocks_dir, README: "
                   "Block definitions without code)",
    "conversion_dir": "converter scripts are not loaded",
    "fallback_model_index": "every key not tuned keeps the method default",
    "generator_concurrency_limit": "generation runs in process",
    "visualizations": "the tab and optuna-dashboard plot the study",
    "scorer_device": "scorers run on the host's device",
    "scorer_alt_location": "scorers read their files from models_dir (scorers download fetches them)",
}


def _sections(config: dict[str, Any]) -> dict[str, Any]:
    """Every key of the nested layout's sections and of the flat one, at one level."""
    flat = {k: v for k, v in config.items() if k not in ("paths", "merge", "generation", "scoring")}
    for name in ("paths", "merge", "generation", "scoring"):
        if isinstance(config.get(name), dict):
            flat.update(config[name])
    return flat


def _models(s: dict[str, Any], out: Imported, base_dir: Path) -> None:
    paths = s.get("model_paths") or [s[k] for k in ("model_a", "model_b", "model_c") if s.get(k)]
    names = [_stem(p, i) for i, p in enumerate(paths)]
    out.data["models"] = [{"path": _absolute(p, base_dir), "name": n} for p, n in zip(paths, names)]
    mode = s.get("optimization_mode", "merge")
    method = s.get("merge_method") or s.get("merge_mode") or "weighted_sum"
    if mode == "layer_adjust":
        out.data["models"] = out.data["models"][:1]
        out.data["merge"] = {"method": "layer_adjust"}
    elif mode == "recipe":
        recipe = s.get("recipe_optimization") or {}
        out.data["mode"] = "recipe"
        out.data["recipe"] = {"path": str(recipe.get("recipe_path", ""))}
        nodes = recipe.get("target_nodes") or []
        nodes = [nodes] if isinstance(nodes, str) else nodes
        params = recipe.get("target_params") or ["*"]
        out.data.setdefault("guide", {})["recipe"] = {"include": [f"{n}.{p}" for n in nodes for p in params] or ["*"]}
    else:
        out.data["merge"] = {"method": method}
    index = s.get("base_model_index")
    if mode == "merge" and isinstance(index, int) and len(names) >= 3 and 0 <= index < len(names):
        out.data["base_model"] = names[index]
    dtype = s.get("merge_dtype")
    if dtype in ("fp32", "fp16", "bf16"):
        out.data["merge_precision"] = dtype
    elif dtype:
        out.drop("merge_dtype", f"{dtype}: merges compute in fp32, fp16 or bf16 here (fp32 used)")
    if s.get("model_arch"):
        out.drop("model_arch", "the architecture is read from the checkpoints")


def _absolute(path: Any, base_dir: Path) -> str:
    """A path of the old config, relative ones taken from its folder (the new config may live elsewhere)."""
    p = Path(str(path)).expanduser()
    return str(p if p.is_absolute() else (base_dir / p).resolve())


def _stem(path: Any, i: int) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(str(path)).stem)[:60].strip("._-")
    return stem or f"model{i}"


def _optimizer(s: dict[str, Any], out: Imported) -> None:
    opt = s.get("optimizer")
    settings = opt if isinstance(opt, dict) else {}
    init, iters = settings.get("init_points", s.get("init_points", 10)), settings.get("n_iters", s.get("n_iters", 20))
    bayes = opt == "bayes" or settings.get("bayes")
    optuna_cfg = settings.get("optuna_config") or {}
    o: dict[str, Any] = {"trials": int(init) + int(iters)}
    if bayes:
        o["sampler"] = "gp"  # a Gaussian process, as bayes_opt's, with its random start
        o["sampler_options"] = {"n_startup_trials": int(init)}
        if settings.get("bayes_config") or s.get("acquisition_function") or s.get("bounds_transformer"):
            out.drop("optimizer.bayes_config", "bayes_opt's acquisition function, kappa decay and bounds transformer "
                                               "have no GP sampler option; Optuna's GP chooses its own (logEI)")
    else:
        kind = (optuna_cfg.get("sampler") or {}).get("type", "tpe") if isinstance(optuna_cfg.get("sampler"), dict) \
            else optuna_cfg.get("sampler", "tpe")
        if kind in SAMPLERS:
            o["sampler"] = SAMPLERS[kind]
        else:
            out.drop("optimizer.optuna_config.sampler.type", f"{kind}: not available here (tpe used)")
        if o.get("sampler") in ("tpe", "gp"):
            o["sampler_options"] = {"n_startup_trials": int(init)}
        if optuna_cfg.get("use_pruning"):
            o["pruner"] = "halving" if optuna_cfg.get("pruner_type") == "successive_halving" else "median"
        if optuna_cfg.get("early_stopping"):
            o["early_stopping"] = {"patience": int(optuna_cfg.get("patience", 10)),
                                   "min_improvement": float(optuna_cfg.get("min_improvement", 0.0))}
        for old in ("storage_dir", "resume_from_study", "fork_study", "n_jobs", "launch_dashboard"):
            if optuna_cfg.get(old):
                out.drop(f"optimizer.optuna_config.{old}", "studies live in the run folder (optimizer.storage for a "
                                                            "database); resume and fork with --resume / --fork")
    seed = settings.get("random_state", s.get("random_state"))
    if isinstance(seed, int) and seed >= 0:
        o["seed"] = seed
    out.data["optimizer"] = o


def _scorers(s: dict[str, Any], out: Imported) -> None:
    methods = s.get("scorer_method") or []
    methods = [methods] if isinstance(methods, str) else methods
    weights = s.get("scorer_weight") or {}
    scorers = []
    for m in methods:
        ours = SCORERS.get(str(m).lower())
        if ours is None:
            out.drop(f"scorer_method: {m}", "no such scorer here (scorers lists those there are)")
            continue
        entry: dict[str, Any] = {"name": ours}
        if m in weights:
            entry["weight"] = float(weights[m])
        scorers.append(entry)
    out.data["scorers"] = scorers or ["image_stats"]
    if not scorers:
        out.drop("scorer_method", "none of its scorers exists here: image_stats put in its place")
    mean = s.get("scorer_average_type")
    if mean in MEANS:
        out.data["scoring"] = {"scorer_mean": mean}
    if s.get("img_average_type") not in (None, "arithmetic"):
        out.drop("img_average_type", "a scorer's images are averaged arithmetically here")


def _payloads(payloads: list[tuple[str, dict[str, Any]]], s: dict[str, Any], out: Imported) -> None:
    batch = s.get("batch_size")
    excluded = {SCORERS.get(str(k).lower()): set((v or {}).get("exclude") or [])
                for k, v in (s.get("scorer_filters") or {}).items()}
    names = [e["name"] if isinstance(e, dict) else e for e in out.data["scorers"]]
    sets = []
    for name, fields in payloads:
        p: dict[str, Any] = {"name": _stem(name, len(sets))}
        hires = bool(fields.get("enable_hr"))
        for old, value in fields.items():
            if old in PAYLOAD_FIELDS:
                p[PAYLOAD_FIELDS[old]] = value
            elif _worth_saying(old, value, hires):
                out.drop(f"payload {name}: {old}", "not a prompt-set field here yet")
        if batch and "batch_size" not in p:
            p["batch_size"] = batch
        use = [n for n in names if name not in excluded.get(n, set())]
        if not use:
            out.drop(f"scorer_filters (payload {name})", "every scorer excludes it; a prompt set needs one here, "
                                                         "so every scorer scores it")
        elif len(use) < len(names):
            p["scorers"] = use
        sets.append(p)
    out.data["payloads"] = sets or [{"prompt": "a photo"}]
    if not sets:
        out.drop("payloads", "no payload file given (--payloads): one placeholder prompt set put in their place")


def _worth_saying(old: str, value: Any, hires: bool) -> bool:
    """A payload field not carried over that would change the images (not its neutral value, not
    a hires-fix setting while hires fix is off)."""
    if old == "sampler_index" or (old in NEUTRAL and NEUTRAL[old] == value):
        return False
    return hires or not (old.startswith(("hr_", "firstphase_")) or old == "denoising_strength")


def _guide(guide: dict[str, Any], s: dict[str, Any], out: Imported) -> None:
    g = out.data.setdefault("guide", {})
    if out.data.get("merge", {}).get("method") == "layer_adjust":
        _adjust_guide(guide, g)
        return
    custom = guide.get("custom_block_config_id")
    if custom:
        out.drop("custom_block_config_id", f"{custom}: block names are mapped onto the SuperMerger blocks "
                                           "(UNET_IN04 -> IN04); write a block definition for other blocks")
    for comp in guide.get("components") or []:
        if not isinstance(comp, dict) or not comp.get("name"):
            continue
        params = comp.get("optimize_params") or []
        strategies = comp.get("strategies") or [{"type": comp.get("strategy", "all"), "keys": comp.get("keys"),
                                                  "groups": comp.get("groups")}]
        g[comp["name"]] = [_strategy(st, params) for st in strategies if isinstance(st, dict)]
    bounds = {}
    for name, value in (guide.get("custom_bounds") or {}).items():
        b = _bound(value)
        if b is None:
            out.drop(f"custom_bounds.{name}", f"{value!r}: not a value, a list of choices or a range")
        else:
            bounds[_param_name(name)] = b
    if bounds:
        g["bounds"] = bounds
    if guide.get("dependencies"):
        out.drop("dependencies", "parameters do not depend on each other here; tune or fix each")


def _strategy(st: dict[str, Any], params: list[str]) -> dict[str, Any]:
    kind = st.get("type") or st.get("strategy") or "all"
    out: dict[str, Any] = {"strategy": kind}
    if st.get("target_type") in ("block", "key"):
        out["items"] = st["target_type"] + "s"
    if kind == "select":
        out["patterns"] = [_block(k) for k in st.get("keys") or []]
    if kind == "group":
        groups = st.get("groups") or []
        out["groups"] = {gr["name"]: [_block(k) for k in gr.get("keys") or []] for gr in groups if isinstance(gr, dict)}
    own = st.get("optimize_params") or params
    if own and kind != "none":
        out["params"] = list(own)
    return out


def _block(name: str) -> str:
    """The old custom block names onto the SuperMerger blocks: UNET_IN04 -> IN04, UNET_MID00 -> M00."""
    name = str(name)
    name = re.sub(r"^UNET_MID0*0$", "M00", name)
    return re.sub(r"^UNET_", "", name)


def _param_name(name: str) -> str:
    """``UNET_IN04_alpha`` -> ``diffuser.IN04.alpha``; a bare hyperparameter name stays."""
    m = re.fullmatch(r"UNET_(IN\d+|MID\d+|OUT\d+)_(\w+)", name) or re.fullmatch(r"(IN\d+|M00|OUT\d+)_(\w+)", name)
    if m:
        return f"diffuser.{_block(m.group(1)) if not m.group(1).startswith('MID') else 'M00'}.{m.group(2)}"
    return name


def _bound(value: Any) -> dict[str, Any] | None:
    if isinstance(value, (bool, int, float)):
        return {"fixed": value}
    if isinstance(value, list) and value:
        return {"choices": value}
    if isinstance(value, str):
        m = re.fullmatch(r"\s*\(\s*([-\d.eE+]+)\s*,\s*([-\d.eE+]+)\s*\)\s*", value)
        return {"low": float(m.group(1)), "high": float(m.group(2))} if m else None
    if isinstance(value, dict) and isinstance(value.get("range"), list) and len(value["range"]) == 2:
        b = {"low": float(value["range"][0]), "high": float(value["range"][1])}
        b.update({k: value[k] for k in ("step", "log") if k in value})
        return b
    return None


def _adjust_guide(guide: dict[str, Any], g: dict[str, Any]) -> None:
    """layer_adjust mode: the eight values tuned on the whole UNet, bounds carried over by name."""
    g["diffuser"] = [{"strategy": "single"}]
    g["clip_l"] = [{"strategy": "none"}]
    bounds = {}
    for comp in guide.get("components") or []:
        for old, value in ((comp or {}).get("parameters") or {}).items():
            if old in ADJUST and isinstance(value, list) and len(value) == 2:
                bounds[ADJUST[old]] = {"low": float(value[0]), "high": float(value[1])}
    for old, value in (guide.get("custom_bounds") or {}).items():
        b = _bound(value)
        if old in ADJUST and b is not None:
            bounds[ADJUST[old]] = b
    if bounds:
        g["bounds"] = bounds


def read_payloads(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    """The payloads of ``folder`` (and its ``cargo/``), as :func:`payloads_from_files` reads them."""
    if not folder.is_dir():
        raise ConfigError([Problem("--payloads", "not a folder", str(folder))])
    return payloads_from_files(sorted(folder.glob("*.yaml")) + sorted((folder / "cargo").glob("*.yaml")))


def payloads_from_files(files: list[Path]) -> list[tuple[str, dict[str, Any]]]:
    """A cargo file's shared defaults under each payload it chooses (all of them when no cargo
    file chooses), in the cargo file's order, else by name."""
    defaults: dict[str, Any] = {}
    chosen: list[str] = []
    found: dict[str, dict[str, Any]] = {}
    for path in files:
        data = read_yaml(path, "--payloads")
        if "defaults" in data:  # a cargo file
            for entry in data.get("defaults") or []:
                if isinstance(entry, dict) and isinstance(entry.get("cargo"), list):
                    chosen += [str(n) for n in entry["cargo"]]
            defaults.update({k: v for k, v in data.items() if k not in ("defaults", "cargo")})
            continue
        for name, fields in data.items():
            if isinstance(fields, dict):
                found[str(name)] = fields
    names = [n for n in chosen if n in found] or sorted(found)
    return [(n, {**defaults, **found[n]}) for n in names]


def write_config(data: dict[str, Any], out: Path) -> None:
    if out.exists() or out.is_symlink():
        raise FileExistsError(f"--out: {out} exists; choose another name (never overwritten)")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
