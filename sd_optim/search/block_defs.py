"""Block definitions without code: a YAML file names blocks and gives each the keys of a model
config it sets, by patterns, and is registered with sd-mecha as a block config with its
conversion to the model config, so ``guide.blocks`` can name it and an exported recipe that uses
it merges with plain sd-mecha once the definition is registered (:func:`register_folder`).

The format (shipped examples in ``blocks_shipped/``)::

    name: attn_resnet            # the block config is "<arch>-<name>": sd1-attn_resnet
    model_config: sd1-ldm
    blocks:                      # in the order they are shown and tuned
      IN_ATTN: ["model.diffusion_model.input_blocks.*.1.*"]    # fnmatch patterns over the keys
      UNET_OTHER:
        keys: ["model.diffusion_model.*"]
        except: ["model.diffusion_model.input_blocks.*.1.*"]   # patterns taken back
    catch_all: REST              # the block of every key no pattern claims

Every key belongs to exactly one block: a key two blocks claim, or one none claims while there is
no catch-all, is an error that names the blocks and gives examples.
"""

# no ``from __future__ import annotations``: sd-mecha reads the converter's annotations as objects
import dataclasses
import fnmatch
import re
import threading
from pathlib import Path
from typing import Any, TypeVar

import yaml
from sd_mecha import merge_method
from sd_mecha.extensions import model_configs
from sd_mecha.extensions.merge_methods import Parameter, Return, StateDict

from ..config.safe_yaml import load_config_mapping
from ..errors import ConfigError, Problem

SHIPPED_DIR = Path(__file__).parent / "blocks_shipped"
NAME = r"[a-z0-9][a-z0-9_]{0,39}"  # a definition's name: part of an sd-mecha identifier
BLOCK = r"[A-Za-z0-9][A-Za-z0-9_]{0,39}"
EXAMPLES = 3  # example keys an error gives
T = TypeVar("T")

_LOCK = threading.Lock()
_REGISTERED: dict[str, Path] = {}  # identifier -> the file it was registered from
_READ: dict[Path, tuple[int, str]] = {}  # file -> (its mtime, identifier): the tab's preview asks often


@dataclasses.dataclass
class BlockDefinition:
    identifier: str  # "<arch>-<name>", what guide.blocks names
    model_config: str
    blocks: dict[str, tuple[list[str], list[str]]]  # name -> (patterns, patterns taken back), in order
    catch_all: str  # "" when there is none
    source: Path


def read_definition(path: Path) -> BlockDefinition:
    """The definition in ``path``; ConfigError naming the file and the field when it is not one."""
    where = path.name
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([Problem(where, f"cannot be read: {e}")]) from None
    data = load_config_mapping(text, where) or {}
    problems: list[Problem] = []
    unknown = sorted(set(data) - {"name", "model_config", "blocks", "catch_all", "description"})
    if unknown:
        problems.append(Problem(f"{where}: {unknown[0]}", "not a field of a block definition (fields: name, "
                                                          "model_config, blocks, catch_all, description)"))
    name, mc = data.get("name"), data.get("model_config")
    if not isinstance(name, str) or not re.fullmatch(NAME, name):
        problems.append(Problem(f"{where}: name", "lower-case letters, digits and '_' (up to 40)", name))
    if mc not in ("sd1-ldm", "sdxl-sgm"):
        problems.append(Problem(f"{where}: model_config", "must be sd1-ldm or sdxl-sgm", mc))
    blocks = _blocks(where, data.get("blocks"), problems)
    catch_all = data.get("catch_all") or ""
    if catch_all and (not isinstance(catch_all, str) or not re.fullmatch(BLOCK, catch_all)):
        problems.append(Problem(f"{where}: catch_all", "a block name: letters, digits and '_'", catch_all))
    if problems:
        raise ConfigError(problems)
    if catch_all and catch_all not in blocks:
        blocks[catch_all] = ([], [])
    return BlockDefinition(f"{mc.split('-')[0]}-{name}", mc, blocks, catch_all, path)


def _blocks(where: str, value: Any, problems: list[Problem]) -> dict[str, tuple[list[str], list[str]]]:
    if not isinstance(value, dict) or not value:
        problems.append(Problem(f"{where}: blocks", "a mapping of block names to key patterns", value))
        return {}
    out = {}
    for block, spec in value.items():
        field = f"{where}: blocks.{block}"
        if not isinstance(block, str) or not re.fullmatch(BLOCK, block):
            problems.append(Problem(field, "a block name is letters, digits and '_' (up to 40)"))
            continue
        spec = {"keys": spec} if isinstance(spec, (list, str)) else spec
        if not isinstance(spec, dict) or set(spec) - {"keys", "except"}:
            problems.append(Problem(field, "a list of key patterns, or {keys: [...], except: [...]}", spec))
            continue
        lists = [[spec[k]] if isinstance(spec.get(k), str) else spec.get(k) or [] for k in ("keys", "except")]
        if not all(isinstance(x, list) and all(isinstance(p, str) for p in x) for x in lists):
            problems.append(Problem(field, "patterns are strings", spec))
            continue
        out[block] = (lists[0], lists[1])
    return out


def assignment(defn: BlockDefinition) -> dict[str, str]:
    """Every key of the definition's model config -> its block; ConfigError (with example keys)
    for keys two blocks claim, and for keys none claims without a catch-all."""
    where = defn.source.name
    keys = list(model_configs.resolve(defn.model_config).keys())
    claims: dict[str, list[str]] = {}
    for block, (patterns, taken_back) in defn.blocks.items():
        for key in _matching(keys, patterns):
            if not any(fnmatch.fnmatchcase(key, p) for p in taken_back):
                claims.setdefault(key, []).append(block)
    problems = []
    twice: dict[tuple[str, ...], list[str]] = {}
    for key, blocks in claims.items():
        if len(blocks) > 1:
            twice.setdefault(tuple(blocks), []).append(key)
    for blocks, examples in twice.items():
        problems.append(Problem(f"{where}: blocks.{blocks[1]}", f"{len(examples)} keys claimed by {' and '.join(blocks)}, "
                                                                f"e.g. {', '.join(examples[:EXAMPLES])}"))
    unassigned = [k for k in keys if k not in claims]
    if unassigned and not defn.catch_all:
        problems.append(Problem(f"{where}: catch_all", f"{len(unassigned)} keys of {defn.model_config} belong to no "
                                                       f"block, e.g. {', '.join(unassigned[:EXAMPLES])}; add patterns "
                                                       "or a catch_all block"))
    if problems:
        raise ConfigError(problems)
    return {k: claims[k][0] if k in claims else defn.catch_all for k in keys}


def _matching(keys: list[str], patterns: list[str]) -> list[str]:
    regexes = [re.compile(fnmatch.translate(p)) for p in patterns]
    return [k for k in keys if any(r.match(k) for r in regexes)]


def register(defn: BlockDefinition) -> str:
    """The definition as an sd-mecha block config and its conversion; its identifier. Registering
    the same file again does nothing; another with a taken identifier is refused."""
    with _LOCK:
        known = _REGISTERED.get(defn.identifier)
        if known is not None:
            if known.resolve() != defn.source.resolve():
                raise ConfigError([Problem(f"{defn.source.name}: name", f"block config {defn.identifier!r} is "
                                                                        f"defined by {known} already")])
            return defn.identifier
        try:
            model_configs.resolve(defn.identifier)
        except (KeyError, ValueError):
            pass
        else:
            raise ConfigError([Problem(f"{defn.source.name}: name", f"{defn.identifier!r} is a model config "
                                                                    "sd-mecha has already; choose another name")])
        key_blocks = assignment(defn)
        config = {"identifier": defn.identifier,
                  "components": {"blocks": {b: {"shape": [], "dtype": "float32"} for b in defn.blocks}}}
        model_configs.register(model_configs.from_yaml(yaml.safe_dump(config, sort_keys=False)))
        merge_method(_converter(defn, key_blocks), is_conversion=True, reuse_outputs=False,
                     identifier=f"convert_{defn.identifier.replace('-', '_')}_blocks_to_{defn.model_config}")
        _REGISTERED[defn.identifier] = defn.source
        return defn.identifier


def _converter(defn: BlockDefinition, key_blocks: dict[str, str]) -> type:
    target = model_configs.resolve(defn.model_config)

    def map_keys(b):
        for key in target.keys():  # noqa: SIM118 - a ModelConfig is not iterable
            b[key] = b.keys[key_blocks[key]]

    def call(self, blocks: Parameter(StateDict[T], model_config=defn.identifier),
             **kwargs) -> Return(T, model_config=defn.model_config):
        return blocks[kwargs["key_relation"].inputs["blocks"][0]]

    return type(f"convert_{defn.identifier.replace('-', '_')}_blocks", (),
                {"map_keys": staticmethod(map_keys), "__call__": call})


def register_folder(folder: Path | str) -> list[str]:
    """Every ``*.yaml`` definition in ``folder`` registered (one ConfigError for all problems);
    their identifiers. What a script does before merging a recipe that uses them::

        from sd_optim.search.block_defs import register_folder
        register_folder("path/to/blocks")   # sd-optim's own: register_folder(SHIPPED_DIR)
    """
    folder = Path(folder)
    problems, names = [], []
    for path in sorted(folder.glob("*.yaml")):
        known = _READ.get(path.resolve())
        if known is not None and known[0] == path.stat().st_mtime_ns:  # read before, unchanged
            names.append(known[1])
            continue
        try:
            names.append(register(read_definition(path)))
            _READ[path.resolve()] = (path.stat().st_mtime_ns, names[-1])
        except ConfigError as e:
            problems += e.problems
    if problems:
        raise ConfigError(problems)
    return names


def ensure_registered(user_folder: Path | None = None) -> list[str]:
    """The shipped definitions, and the user's folder's (``blocks_dir``) when given."""
    names = register_folder(SHIPPED_DIR)
    if user_folder is not None:
        if not user_folder.is_dir():
            raise ConfigError([Problem("blocks_dir", "not a folder", str(user_folder))])
        try:
            names += register_folder(user_folder)
        except ConfigError as e:
            raise ConfigError([Problem(f"blocks_dir: {p.field}", p.message, p.value) for p in e.problems]) from None
    return names


def registered_block_configs() -> list[str]:
    """The block configs a guide may name: sd-mecha's supermerger ones and every definition registered."""
    return ["sd1-supermerger_blocks", "sdxl-supermerger_blocks", *sorted(_REGISTERED)]
