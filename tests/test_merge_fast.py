"""The merge engine's fast path against sd-mecha: random recipes of the linear methods on tiny SD1
models (float32, float16 and bfloat16 weights), merged into a plain tensor slot.

Every comparison here is bit-exact (``torch.equal``): the fast path runs the methods' own
operations in sd-mecha's order and dtype. The references are ``sd_mecha.merge`` itself on the same
files (its output cast to the model's dtype, as a slot stores it) and the engine's sd-mecha path
(``MergeEngine(fast=False)``) on the same cached inputs.
"""

from __future__ import annotations

import json
import random

import pytest
import safetensors.torch
import sd_mecha
import torch
from sd_mecha.extensions import merge_methods

from sd_optim.cli import main
from sd_optim.files.tensor_files import load_tensors
from sd_optim.merging import MergeEngine, MergeError
from sd_optim.merging._engine import _NoProgress
from sd_optim.merging._fast import compile_plan
from sd_optim.merging.tensor_slot import TensorSlot
from sd_optim.search.blocks import block_names, key_to_block

CONFIG, BLOCKS = "sd1-ldm", "sd1-supermerger_blocks"


@pytest.fixture(scope="module", params=[torch.float32, torch.float16, torch.bfloat16],
                ids=["fp32", "fp16", "bf16"])
def models(request, tiny_sd1_paths, tmp_path_factory):
    """The three tiny SD1 models in one dtype, as files."""
    folder = tmp_path_factory.mktemp(f"models-{str(request.param).split('.')[-1]}")
    paths = []
    for i, path in enumerate(tiny_sd1_paths):
        state = {k: (v.to(request.param) if v.is_floating_point() else v) for k, v in load_tensors(path).items()}
        paths.append(folder / f"m{i}.safetensors")
        safetensors.torch.save_file(state, str(paths[-1]))
    return paths


def model(path):
    return sd_mecha.model(str(path), config=CONFIG)


def slot_of(path) -> TensorSlot:
    return TensorSlot(load_tensors(path))


def mecha_merge(recipe, merge_dtype=torch.float32) -> dict[str, torch.Tensor]:
    out = sd_mecha.merge(recipe, merge_dtype=merge_dtype, output_dtype=None, tqdm=_NoProgress,
                         check_finite_output=False, omit_non_finite_inputs=False)
    out.pop("__metadata__", None)
    return out


def assert_slot_is(slot: TensorSlot, expected: dict[str, torch.Tensor], keys=None):
    keys = keys if keys is not None else expected.keys()
    for key in keys:
        live = slot.tensors[key]
        assert torch.equal(live, expected[key].to(live.dtype)), key


# --- random recipes ------------------------------------------------------------------------------


def random_weight(rng: random.Random):
    kind = rng.choice(["scalar", "scalar", "zero", "one", "per_key", "per_block"])
    if kind == "scalar":
        return rng.uniform(-0.5, 1.5)
    if kind in ("zero", "one"):
        return float(kind == "one")
    if kind == "per_key":
        keys = rng.sample(sorted(key_to_block(BLOCKS, CONFIG)), 200)
        return sd_mecha.literal({k: rng.random() for k in keys}, config=CONFIG) | rng.random()
    blocks = rng.sample(block_names(BLOCKS), 12)
    return sd_mecha.convert(sd_mecha.literal({b: rng.random() for b in blocks}, config=BLOCKS), CONFIG) \
        | rng.random()


def random_recipe(rng: random.Random, nodes: list, depth: int):
    """A weight-space recipe over ``nodes`` (the models) of the fast path's methods."""
    if depth == 0:
        return rng.choice(nodes)
    kind = rng.choice(["weighted_sum", "weighted_sum", "add_difference", "n_average", "add_perpendicular"])
    if kind == "weighted_sum":
        return sd_mecha.weighted_sum(random_recipe(rng, nodes, depth - 1), random_recipe(rng, nodes, depth - 1),
                                     alpha=random_weight(rng))
    if kind == "add_difference":
        delta = merge_methods.resolve("subtract")(random_recipe(rng, nodes, depth - 1), rng.choice(nodes))
        return merge_methods.resolve("add_difference")(random_recipe(rng, nodes, depth - 1), delta,
                                                       alpha=random_weight(rng))
    if kind == "add_perpendicular":  # subtract, perpendicular_component and add_difference nodes
        return sd_mecha.add_perpendicular(random_recipe(rng, nodes, depth - 1), random_recipe(rng, nodes, depth - 1),
                                          rng.choice(nodes), alpha=random_weight(rng))
    return sd_mecha.n_average(*(random_recipe(rng, nodes, depth - 1) for _ in range(rng.randint(2, 3))))


@pytest.mark.parametrize("seed", range(8))
def test_random_linear_recipes_merge_bit_exactly_as_sd_mecha(models, seed):
    rng = random.Random(seed)
    recipe = random_recipe(rng, [model(p) for p in models], depth=rng.randint(1, 3))
    engine, slot = MergeEngine(), slot_of(models[0])
    stats = engine.apply(recipe, slot, CONFIG)
    assert stats.path == "fast", engine.last_unsupported
    expected = mecha_merge(recipe)
    assert stats.keys_written == len(expected) == stats.keys_computed
    assert_slot_is(slot, expected)


def test_add_perpendicular_matches_sd_mecha_even_where_the_difference_is_zero(models):
    a, b, c = (model(p) for p in models)
    for recipe in (sd_mecha.add_perpendicular(a, b, c, alpha=0.7), sd_mecha.add_perpendicular(a, b, a, alpha=0.5)):
        slot = slot_of(models[0])
        assert MergeEngine().apply(recipe, slot, CONFIG).path == "fast"
        assert_slot_is(slot, mecha_merge(recipe))  # bit-exact; a - a: zeros, as sd-mecha gives


def test_a_lora_merged_into_an_input_takes_the_fast_path_bit_exactly(models, tmp_path):
    """The planner's LoRA recipe (add_difference of the LoRA's conversion, fallback to the model):
    the conversion is computed once by sd-mecha and read as an input; the result equals the
    sd-mecha path's, and a second trial reuses the conversion."""
    from test_merge_modes import VAE_LORA_KEYS, write_kohya_lora

    from sd_optim.search.recipes import input_nodes

    lora = tmp_path / "lora.safetensors"
    write_kohya_lora(lora, models[1], VAE_LORA_KEYS[CONFIG])
    from sd_optim.config import config_from_dict

    config = config_from_dict({"models": [{"path": str(p), "name": n} for p, n in zip(models[:2], "ab")],
                               "loras": [{"path": str(lora), "apply_to": "b", "strength": 0.7}],
                               "payloads": [{"prompt": "x"}], "scorers": ["image_stats"]})
    (a, b), _ = input_nodes(config, CONFIG)
    engine = MergeEngine()
    for alpha in (0.3, 0.6):
        recipe = sd_mecha.weighted_sum(a, b, alpha=alpha)
        fast, reference = slot_of(models[0]), slot_of(models[0])
        assert engine.apply(recipe, fast, CONFIG).path == "fast", engine.last_unsupported
        MergeEngine(fast=False).apply(recipe, reference, CONFIG)
        assert all(torch.equal(fast.tensors[k], reference.tensors[k]) for k in fast.tensors)
    assert len(engine._converted) == 1  # converted once, for both trials
    key = next(iter(VAE_LORA_KEYS[CONFIG].values()))
    assert not torch.equal(fast.tensors[key], torch.lerp(load_tensors(models[0])[key], load_tensors(models[1])[key],
                                                         0.6))  # the LoRA is in


def test_merge_precision_float16_and_bfloat16_match_sd_mecha_too(models):
    recipe = sd_mecha.weighted_sum(model(models[0]), merge_methods.resolve("add_difference")(
        model(models[1]), merge_methods.resolve("subtract")(model(models[2]), model(models[0])), alpha=0.7),
        alpha=0.3)
    for dtype in (torch.float16, torch.bfloat16):
        slot = slot_of(models[0])
        assert MergeEngine(merge_dtype=dtype).apply(recipe, slot, CONFIG).path == "fast"
        assert_slot_is(slot, mecha_merge(recipe, merge_dtype=dtype))


def test_the_planners_recipes_take_the_fast_path_and_match_the_sd_mecha_path(models):
    from sd_optim.config import config_from_dict
    from sd_optim.search.planning import make_planner

    for method, guide, base in (("weighted_sum", ["all"], None), ("add_difference", ["single"], "c")):
        data = {"models": [{"path": str(p), "name": n} for p, n in zip(models, "abc")],
                "merge": {"method": method}, "guide": {"diffuser": guide, "clip_l": ["single"]},
                "payloads": [{"prompt": "x"}], "scorers": ["image_stats"]}
        if base:
            data["base_model"] = base
        else:
            data["models"] = data["models"][:2]
        planner = make_planner(config_from_dict(data), CONFIG)
        rng = random.Random(1)
        recipe = planner.recipe({p.name: rng.uniform(p.distribution.low, p.distribution.high)
                                 for p in planner.space.params})
        fast, reference = slot_of(models[0]), slot_of(models[0])
        assert MergeEngine().apply(recipe, fast, CONFIG).path == "fast"
        assert MergeEngine(fast=False).apply(recipe, reference, CONFIG).path == "sd-mecha"
        assert all(torch.equal(fast.tensors[k], reference.tensors[k]) for k in fast.tensors)


# --- incremental merges and restore -------------------------------------------------------------


def block_recipe(models, values: dict[str, float]):
    alpha = sd_mecha.convert(sd_mecha.literal(values, config=BLOCKS), CONFIG) | 0.5
    return sd_mecha.weighted_sum(model(models[0]), model(models[1]), alpha=alpha)


def test_a_one_block_change_recomputes_that_blocks_keys_only(models):
    values = dict.fromkeys(block_names(BLOCKS), 0.25)
    engine, slot = MergeEngine(), slot_of(models[0])
    first = engine.apply(block_recipe(models, values), slot, CONFIG)
    assert first.keys_computed == first.keys_written
    in04 = {k for k, b in key_to_block(BLOCKS, CONFIG).items() if b == "IN04"}
    second = engine.apply(block_recipe(models, {**values, "IN04": 0.75}), slot, CONFIG)
    assert second.keys_computed == len(in04) and second.keys_written == first.keys_written
    assert_slot_is(slot, mecha_merge(block_recipe(models, {**values, "IN04": 0.75})))
    assert engine.apply(block_recipe(models, {**values, "IN04": 0.75}), slot, CONFIG).keys_computed == 0


def literal_trials_recipe(models, per_key: dict[str, float], blocks: dict[str, float]):
    """A per-key weighted_sum with a per-block add_difference on top: two literals to change."""
    inner = sd_mecha.weighted_sum(model(models[0]), model(models[1]),
                                  alpha=sd_mecha.literal(dict(per_key), config=CONFIG) | 0.4)
    delta = merge_methods.resolve("subtract")(model(models[2]), model(models[0]))
    alpha = sd_mecha.convert(sd_mecha.literal(dict(blocks), config=BLOCKS), CONFIG) | 0.1
    return merge_methods.resolve("add_difference")(inner, delta, alpha=alpha)


@pytest.mark.parametrize("seed", range(2))
def test_trials_changing_literal_values_update_the_plan_and_still_match_sd_mecha(models, seed):
    rng = random.Random(seed)
    k2b = key_to_block(BLOCKS, CONFIG)
    per_key = dict.fromkeys(rng.sample(sorted(k2b), 300), 0.5)
    blocks = dict.fromkeys(block_names(BLOCKS), 0.5)
    engine, slot = MergeEngine(), slot_of(models[0])
    engine.apply(literal_trials_recipe(models, per_key, blocks), slot, CONFIG)
    for _ in range(3):
        keys = rng.sample(sorted(per_key), 5)
        per_key.update({k: rng.choice([0.0, 1.0, round(rng.random(), 3)]) for k in keys})
        changed = rng.sample(block_names(BLOCKS), 2)
        blocks.update({b: rng.choice([0.0, round(rng.random(), 3)]) for b in changed})
        recipe = literal_trials_recipe(models, per_key, blocks)
        stats = engine.apply(recipe, slot, CONFIG)
        plan = engine._plans._last.plan
        assert plan.base is not None, "the same structure: the plan is updated, not compiled again"
        assert plan.keys == compile_plan(recipe, engine.cached, CONFIG, torch.float32).keys
        assert stats.keys_computed <= len(set(keys) | {k for k, b in k2b.items() if b in changed})
        assert_slot_is(slot, mecha_merge(recipe))  # bit-exact


def test_a_recipe_of_another_structure_is_compiled_afresh(models):
    engine, slot = MergeEngine(), slot_of(models[0])
    engine.apply(literal_trials_recipe(models, {"model.diffusion_model.out.0.weight": 0.2}, {"IN04": 0.3}), slot,
                 CONFIG)
    recipe = literal_trials_recipe(models, {"model.diffusion_model.out.0.bias": 0.2}, {"IN04": 0.3})
    engine.apply(recipe, slot, CONFIG)
    assert engine._plans._last.plan.base is None  # another key set: compiled afresh
    assert_slot_is(slot, mecha_merge(recipe))


def test_a_new_slot_or_a_failed_merge_starts_from_scratch(models):
    engine, recipe = MergeEngine(), block_recipe(models, {"IN04": 0.3})
    slot = slot_of(models[0])
    engine.apply(recipe, slot, CONFIG)
    other = slot_of(models[0])
    assert engine.apply(recipe, other, CONFIG).keys_computed == len(other)

    out11 = next(k for k, b in key_to_block(BLOCKS, CONFIG).items() if b == "OUT11")

    class Failing(TensorSlot):
        armed = False

        def __setitem__(self, key, value):
            if self.armed and key == out11:
                raise RuntimeError("out of memory")
            super().__setitem__(key, value)

        def writable(self, key):
            return None

    failing = Failing(load_tensors(models[0]))
    engine.apply(recipe, failing, CONFIG)
    failing.armed = True
    with pytest.raises(RuntimeError, match="out of memory"):
        engine.apply(block_recipe(models, {"IN04": 0.3, "OUT11": 0.9}), failing, CONFIG)
    assert engine._written == {}  # nothing is trusted after a failed write


def test_restore_puts_back_exactly_what_the_trials_wrote(models):
    original = load_tensors(models[0])
    engine, slot = MergeEngine(), slot_of(models[0])
    engine.apply(block_recipe(models, {"IN04": 0.3}), slot, CONFIG)
    engine.apply(block_recipe(models, {"IN04": 0.6}), slot, CONFIG)
    slot.restore()
    assert all(torch.equal(slot.tensors[k], original[k]) for k in original)


# --- what goes to sd-mecha, and keys an input lacks ---------------------------------------------


def test_other_methods_go_through_sd_mecha_and_say_why(models):
    base = model(models[2])
    deltas = [merge_methods.resolve("subtract")(model(p), base) for p in models[:2]]
    recipe = merge_methods.resolve("add_difference")(base, sd_mecha.ties_sum(*deltas, k=0.5), alpha=0.8)
    engine, slot = MergeEngine(), slot_of(models[0])
    stats = engine.apply(recipe, slot, CONFIG)
    assert stats.path == "sd-mecha" and "ties_sum" in engine.last_unsupported
    assert_slot_is(slot, mecha_merge(recipe))


def test_keys_an_input_lacks_are_left_as_sd_mecha_leaves_them(models, tmp_path):
    state = load_tensors(models[1])
    dropped = sorted(k for k in state if k.startswith("first_stage_model."))
    partial = tmp_path / "no-vae.safetensors"
    safetensors.torch.save_file({k: v for k, v in state.items() if k not in dropped}, str(partial))
    for alpha in (0.0, 0.4):  # even alpha 0, which never reads b, has no value where b lacks the key
        recipe = sd_mecha.weighted_sum(model(models[0]), model(partial), alpha=alpha)
        slot = slot_of(models[0])
        stats = MergeEngine().apply(recipe, slot, CONFIG)
        expected = mecha_merge(recipe)
        assert stats.keys_written == len(expected)
        assert dropped[0] not in expected
        assert_slot_is(slot, expected)
    full = sd_mecha.weighted_sum(model(models[0]), model(partial), alpha=0.4) | model(models[0])
    slot = slot_of(models[0])
    assert MergeEngine().apply(full, slot, CONFIG).keys_written == len(slot)


def test_a_merge_that_drops_keys_every_input_has_is_an_error(models, tmp_path):
    keys = sorted(key_to_block(BLOCKS, CONFIG))[:3]
    literal = sd_mecha.literal(dict.fromkeys(keys, 0.5), config=CONFIG)  # no default for the rest
    recipe = sd_mecha.weighted_sum(model(models[0]), model(models[1]), alpha=literal)
    with pytest.raises(MergeError, match="no value for"):
        MergeEngine().apply(recipe, slot_of(models[0]), CONFIG)


# --- the benchmark ---------------------------------------------------------------------------

def test_bench_merge_times_the_engine_against_a_lerp_loop_and_sd_mecha(capsys):
    """A quick run on some of SD1's keys: every figure, no difference from sd_mecha.merge, and
    the one-block change recomputing that block's keys only."""
    from sd_optim.merging.bench import CHANGED_BLOCK

    assert main(["bench", "merge", "--config", "sd1-ldm", "--keys", "40", "--repeats", "1", "--ties", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    for field in ("config", "device", "lerp_s", "mecha_s", "engine_full_s", "engine_incremental_s",
                  "block_share", "restore_s", "max_abs_diff"):
        assert field in result, field
    assert result["config"] == "sd1-ldm" and result["device"] == "cpu"
    assert result["max_abs_diff"] == 0.0
    block = [k for k, b in key_to_block("sd1-supermerger_blocks", "sd1-ldm").items() if b == CHANGED_BLOCK]
    assert result["keys_incremental"] == len(block) and 0 < result["block_share"] < 1
    assert any("full merge / lerp loop" in line for line in lines)
    assert result["ties_engine_s"] > 0 and result["ties_mecha_s"] > 0  # TIES: the sd-mecha path
