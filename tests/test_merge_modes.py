"""Merge mode on real tiny checkpoints: three-input and delta-space methods, SDXL, LoRA inputs,
and the merge engine's guards.

Every check runs the recipe sd-optim builds through the real merge engine into a host's slot and
compares the slot with an independent computation: plain ``sd_mecha.merge`` of a hand-built
recipe, or torch arithmetic on the checkpoint tensors.
"""

from __future__ import annotations

import pytest
import safetensors.torch
import sd_mecha
import torch
from sd_mecha.extensions import merge_methods

from sd_optim.config import config_from_dict
from sd_optim.errors import ConfigError
from sd_optim.merging import MergeEngine, MergeError
from sd_optim.merging._engine import _NoProgress
from sd_optim.search.planning import make_planner
from sd_optim.search.recipes import RecipeError, recipe_text, trusted_literal
from sd_optim.tiny_models import TINY_SIZE

NAMES = ("a", "b", "c")
VAE_LORA_KEYS = {  # LoRA stem -> checkpoint key, per architecture (see test_lora_* below)
    "sd1-ldm": {"lora_vae_post_quant_conv": "first_stage_model.post_quant_conv.weight",
                "lora_vae_quant_conv": "first_stage_model.quant_conv.weight"},
    "sdxl-sgm": {"lora_first_stage_model_post_quant_conv": "first_stage_model.post_quant_conv.weight",
                 "lora_first_stage_model_quant_conv": "first_stage_model.quant_conv.weight"},
}


def make_config(paths, config_dir, **overrides):
    data = {
        "models": [{"path": str(p), "name": n} for p, n in zip(paths, NAMES)],
        "diffusers_config": str(config_dir),
        "merge": {"method": "weighted_sum"},
        "guide": {"diffuser": ["single"]},
        "payloads": [{"name": "p", "prompt": "a red fox", "steps": 2, "sampler": "Euler",
                      "width": TINY_SIZE, "height": TINY_SIZE}],
        "scorers": ["image_stats"],
        "optimizer": {"sampler": "random", "trials": 1, "seed": 0, "study": "s"},
    }
    data.update(overrides)
    return config_from_dict(data)


def load(path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(path))


def merge_into_slot(host, config, params, engine=None):
    """The planner's recipe merged by the real engine into the host's slot; the slot's values."""
    planner = make_planner(config, host.model_config())
    recipe = planner.recipe(params)
    engine = engine or MergeEngine()
    with host.open_slot() as slot:
        engine.apply(recipe, slot, planner.model_config)
        live = {k: slot[k].clone() for k in slot}
    return recipe, live


def plain_merge(recipe) -> dict[str, torch.Tensor]:
    """Plain sd_mecha.merge, without its slow progress bar and finite checks (docs/sd-mecha.md)."""
    out = sd_mecha.merge(recipe, output_dtype=torch.float32, tqdm=_NoProgress,
                         check_finite_output=False, omit_non_finite_inputs=False)
    out.pop("__metadata__", None)
    return out


def assert_same_floats(live, expected, min_keys):
    compared = 0
    for key, value in expected.items():
        if value.is_floating_point():
            assert torch.equal(live[key], value), key
            compared += 1
    assert compared >= min_keys


def recipe_at_midpoint(config):
    planner = make_planner(config, "sd1-ldm")
    return planner.recipe(planner.space.midpoint())


def model(path, config=None):
    return sd_mecha.model(str(path), config=config)


def resolve(name):
    return merge_methods.resolve(name)


# --- 1. three models, delta-space methods -------------------------------------------------------


def test_add_difference_with_a_base_model_is_a_plus_alpha_b_minus_c(sd1_host, tiny_sd1_paths,
                                                                     tiny_sd1_config_dir):
    config = make_config(tiny_sd1_paths, tiny_sd1_config_dir, base_model="c",
                         merge={"method": "add_difference"},
                         guide={"diffuser": ["single"],
                                "clip_l": [{"strategy": "none", "fixed": {"alpha": 0.45}}]})
    _, live = merge_into_slot(sd1_host, config, {"diffuser.all.alpha": 0.3})
    a, b, c = (load(p) for p in tiny_sd1_paths)
    # diffuser: the trial's 0.3; clip_l: held at 0.45; vae (not in the guide): the default, 1.0
    for key, alpha in (("model.diffusion_model.input_blocks.1.1.proj_in.weight", 0.3),
                       ("model.diffusion_model.out.2.weight", 0.3),
                       ("cond_stage_model.transformer.text_model.encoder.layers.3.mlp.fc1.weight", 0.45),
                       ("first_stage_model.decoder.conv_in.weight", 1.0)):
        expected = a[key] + alpha * (b[key] - c[key])
        torch.testing.assert_close(live[key], expected, rtol=1e-6, atol=1e-6)
        assert not torch.allclose(live[key], a[key])
    from sd_optim.search import blocks

    alphas = {k: 0.3 for k in blocks.component_keys("sd1-ldm", "diffuser")}
    alphas.update({k: 0.45 for k in blocks.component_keys("sd1-ldm", "clip_l")})
    checked = 0
    for key in a:
        if key in live and a[key].is_floating_point():
            expected = a[key] + alphas.get(key, 1.0) * (b[key] - c[key])
            torch.testing.assert_close(live[key], expected, rtol=1e-6, atol=1e-6, msg=key)
            checked += 1
    assert checked > 1100


def test_ties_sum_takes_deltas_from_the_base_and_adds_back(sd1_host, tiny_sd1_paths,
                                                           tiny_sd1_config_dir):
    config = make_config(tiny_sd1_paths, tiny_sd1_config_dir, base_model="c",
                         merge={"method": "ties_sum"})
    _, live = merge_into_slot(sd1_host, config, {"diffuser.all.k": 1.0})  # others: default 1.0
    pa, pb, pc = (model(p) for p in tiny_sd1_paths)
    by_hand = resolve("add_difference")(
        pc, resolve("ties_sum")(resolve("subtract")(pa, pc), resolve("subtract")(pb, pc), k=1.0))
    expected = plain_merge(by_hand)
    assert_same_floats(live, expected, min_keys=1100)
    # closed form with k = 1 (no trimming): where both deltas agree in sign, their mean; else 0
    a, b, c = (load(p) for p in tiny_sd1_paths)
    for key in ("model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight",
                "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"):
        da, db = a[key] - c[key], b[key] - c[key]
        agree = torch.sign(da) == torch.sign(db)
        closed = c[key] + torch.where(agree, (da + db) / 2, torch.zeros_like(da))
        torch.testing.assert_close(live[key], closed, rtol=1e-6, atol=1e-6)
        assert 0.2 < agree.float().mean() < 0.8  # both branches are exercised


def test_model_stock_is_delta_space_too(tiny_sd1_paths, tiny_sd1_config_dir):
    config = make_config(tiny_sd1_paths, tiny_sd1_config_dir, base_model="a",
                         merge={"method": "model_stock"})
    recipe = make_planner(config, "sd1-ldm").recipe({"diffuser.all.cos_eps": 1e-6})
    paths = [str(p.resolve()) for p in tiny_sd1_paths]

    def path_of(node):
        return str(node.path)

    assert recipe.merge_method.identifier == "add_difference"
    args = recipe.bound_args.arguments
    assert path_of(args["a"]) == paths[0]
    stock = args["b"]
    assert stock.merge_method.identifier == "model_stock"
    deltas = stock.bound_args.arguments["deltas"]
    assert [d.merge_method.identifier for d in deltas] == ["subtract", "subtract"]
    assert [(path_of(d.bound_args.arguments["a"]), path_of(d.bound_args.arguments["b"])) for d in deltas] \
        == [(paths[1], paths[0]), (paths[2], paths[0])]


def test_method_needing_a_base_without_base_model_is_refused(tiny_sd1_paths, tiny_sd1_config_dir):
    for method in ("ties_sum", "add_difference", "model_stock"):
        config = make_config(tiny_sd1_paths[:2], tiny_sd1_config_dir, merge={"method": method})
        with pytest.raises(ConfigError, match=rf"merge.method: {method} .*set base_model"):
            recipe_at_midpoint(config)  # refused when the run is planned, before any trial


def test_wrong_model_count_names_the_method_and_counts(tiny_sd1_paths, tiny_sd1_config_dir):
    config = make_config(tiny_sd1_paths, tiny_sd1_config_dir, merge={"method": "add_difference"})
    with pytest.raises(ConfigError, match=r"add_difference takes 2 models \(a, b\), got 3"):
        recipe_at_midpoint(config)
    config = make_config(tiny_sd1_paths[:2], tiny_sd1_config_dir, base_model="b",
                         merge={"method": "add_difference"})
    with pytest.raises(ConfigError, match=r"add_difference takes 2 models \(a, b\), got 1"):
        recipe_at_midpoint(config)


def test_base_model_a_method_would_ignore_is_refused(tiny_sd1_paths, tiny_sd1_config_dir):
    from sd_optim.search.recipes import build_merge_recipe
    from sd_optim.search.space import build_search_space

    for method in ("weighted_sum", "n_average"):  # n_average has nothing to tune: no planner
        config = make_config(tiny_sd1_paths, tiny_sd1_config_dir, base_model="c",
                             merge={"method": method})
        space = build_search_space(config, "sd1-ldm")
        with pytest.raises(RecipeError, match=f"{method} takes no difference.*base_model 'c'"):
            build_merge_recipe(config, space, space.midpoint())


# --- 2. SDXL ------------------------------------------------------------------------------------


def test_sdxl_blocks_and_single_through_the_engine(sdxl_host, tiny_sdxl_paths, tiny_sdxl_config_dir):
    config = make_config(tiny_sdxl_paths, tiny_sdxl_config_dir,
                         guide={"diffuser": ["all"], "clip_g": ["single"]})
    planner = make_planner(config, "sdxl-sgm")
    names = [p.name for p in planner.space.params]
    assert "clip_g.all.alpha" in names and "diffuser.IN04.alpha" in names
    params = {n: round(0.05 + 0.9 * i / len(names), 4) for i, n in enumerate(names)}
    recipe, live = merge_into_slot(sdxl_host, config, params)
    assert_same_floats(live, plain_merge(recipe), min_keys=2000)

    # independently, by torch arithmetic: a diffuser key takes its supermerger block's value
    # (input_blocks.i -> INi, middle_block -> M00, output_blocks.i -> OUTi, the final out.* ->
    # OUT08, the rest BASE); clip_g its single value; clip_l and the VAE (not in the guide)
    # weighted_sum's default 0.5
    a, b = (load(p) for p in tiny_sdxl_paths)
    from sd_optim.search import blocks as blocks_mod

    comp = {c: set(blocks_mod.component_keys("sdxl-sgm", c)) for c in ("diffuser", "clip_g")}
    seen = {"diffuser": 0, "clip_g": 0, "other": 0}
    blocks_seen = set()
    for key, value in a.items():
        if not value.is_floating_point() or key not in live:
            continue
        if key in comp["diffuser"]:
            block = sdxl_block(key)
            alpha = params[f"diffuser.{block}.alpha"]
            blocks_seen.add(block)
            seen["diffuser"] += 1
        elif key in comp["clip_g"]:
            alpha = params["clip_g.all.alpha"]
            seen["clip_g"] += 1
        else:
            alpha = 0.5
            seen["other"] += 1
        torch.testing.assert_close(live[key], torch.lerp(value, b[key], alpha), rtol=1e-6, atol=1e-6,
                                   msg=key)
    assert min(seen.values()) > 50, seen
    assert len(blocks_seen) == 20  # BASE, IN00-08, M00, OUT00-08


def sdxl_block(key: str) -> str:
    rest = key[len("model.diffusion_model."):]
    for prefix, block in (("input_blocks.", "IN"), ("output_blocks.", "OUT")):
        if rest.startswith(prefix):
            return f"{block}{int(rest.split('.')[1]):02d}"
    if rest.startswith("middle_block."):
        return "M00"
    return "OUT08" if rest.startswith("out.") else "BASE"


@pytest.fixture(scope="module")
def third_sdxl(tiny_models_dir):
    from sd_optim.tiny_models import build_tiny_checkpoint

    path = tiny_models_dir / "tiny-sdxl-merge-modes-s5.safetensors"
    return path if path.is_file() else build_tiny_checkpoint("sdxl", path, seed=5)


def test_sdxl_add_difference_with_a_third_model(sdxl_host, tiny_sdxl_paths, tiny_sdxl_config_dir,
                                                third_sdxl):
    paths = [tiny_sdxl_paths[0], third_sdxl, tiny_sdxl_paths[1]]  # a, b, base c
    config = make_config(paths, tiny_sdxl_config_dir, base_model="c",
                         merge={"method": "add_difference"}, guide={"diffuser": ["single"],
                                                                    "clip_l": ["single"], "clip_g": ["single"],
                                                                    "vae": ["single"]})
    params = {f"{c}.all.alpha": 0.6 for c in ("diffuser", "clip_l", "clip_g", "vae")}
    _, live = merge_into_slot(sdxl_host, config, params)
    a, b, c = (load(p) for p in paths)
    checked = 0
    for key, value in a.items():
        if value.is_floating_point() and key in live:
            torch.testing.assert_close(live[key], value + 0.6 * (b[key] - c[key]), rtol=1e-6, atol=1e-6,
                                       msg=key)
            checked += 1
    assert checked > 2000


# --- 3. LoRA inputs -----------------------------------------------------------------------------
# sd-mecha 1.1.8 rebuilds a LoRA delta with ``delta.reshape(<the shape in its model config>)``,
# i.e. the full-size SD1.5 / SDXL shape, so on the tiny models only layers whose size equals the
# full-size one can take a LoRA: the VAE's quant_conv and post_quant_conv (4x4x1x1).


def write_kohya_lora(path, checkpoint, stems: dict[str, str], rank=2, alpha=1.0, seed=0):
    """A kohya-format LoRA for ``checkpoint`` (stem -> checkpoint key), and each layer's delta."""
    sd = load(checkpoint)
    gen = torch.Generator().manual_seed(seed)
    tensors, deltas = {}, {}
    for stem, key in stems.items():
        shape = sd[key].shape
        up = torch.randn(shape[0], rank, *([1] * (len(shape) - 2)), generator=gen)
        down = torch.randn(rank, *shape[1:], generator=gen)
        tensors[f"{stem}.lora_up.weight"] = up
        tensors[f"{stem}.lora_down.weight"] = down
        tensors[f"{stem}.alpha"] = torch.tensor(alpha)
        deltas[key] = (alpha / rank) * (up.flatten(1) @ down.flatten(1)).reshape(shape)
    safetensors.torch.save_file(tensors, str(path))
    return deltas


@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
def test_lora_is_added_to_the_model_it_names(arch, request, tmp_path):
    host = request.getfixturevalue(f"{arch}_host")
    paths = request.getfixturevalue(f"tiny_{arch}_paths")[:2]
    config_dir = request.getfixturevalue(f"tiny_{arch}_config_dir")
    model_config = host.model_config()
    lora = tmp_path / "tiny-lora.safetensors"
    deltas = write_kohya_lora(lora, paths[1], VAE_LORA_KEYS[model_config])
    converted = recipe_text(sd_mecha.convert(sd_mecha.model(str(lora)), model_config))
    assert f"convert_'{arch}-kohya_kohya_lora'_to_base" in converted  # sd-mecha reads it as a LoRA

    strength, alpha = 0.7, 0.25
    config = make_config(paths, config_dir, loras=[{"path": str(lora), "apply_to": "b",
                                                    "strength": strength}],
                         guide={"vae": ["single"]})
    _, live = merge_into_slot(host, config, {"vae.all.alpha": alpha})  # others: default 0.5
    a, b = (load(p) for p in paths)
    for key, delta in deltas.items():
        want = torch.lerp(a[key], b[key] + strength * delta, alpha)
        torch.testing.assert_close(live[key], want, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(live[key], torch.lerp(a[key], b[key], alpha))
    compared = 0
    for key, value in a.items():  # every other key: the plain weighted sum, default alpha 0.5
        if key not in deltas and value.is_floating_point():
            want = torch.lerp(value, b[key], alpha if key.startswith("first_stage_model.") else 0.5)
            torch.testing.assert_close(live[key], want, rtol=1e-6, atol=1e-7, msg=key)
            compared += 1
    assert compared > 1000


def test_lora_on_the_base_model_moves_the_base(sd1_host, tiny_sd1_paths, tiny_sd1_config_dir, tmp_path):
    lora = tmp_path / "base-lora.safetensors"
    deltas = write_kohya_lora(lora, tiny_sd1_paths[2], VAE_LORA_KEYS["sd1-ldm"], seed=1)
    config = make_config(tiny_sd1_paths, tiny_sd1_config_dir, base_model="c",
                         loras=[{"path": str(lora), "apply_to": "c", "strength": 1.0}],
                         merge={"method": "add_difference"})
    recipe = make_planner(config, "sd1-ldm").recipe({"diffuser.all.alpha": 0.5})
    out = plain_merge(recipe)
    a, b, c = (load(p) for p in tiny_sd1_paths)
    for key, delta in deltas.items():  # vae alpha: the default, 1.0: A + (B - (C + delta))
        torch.testing.assert_close(out[key], a[key] + (b[key] - c[key] - delta), rtol=1e-5, atol=1e-6)
    key = "model.diffusion_model.input_blocks.1.1.proj_in.weight"
    torch.testing.assert_close(out[key], a[key] + 0.5 * (b[key] - c[key]), rtol=1e-6, atol=1e-6)


# --- 4. merge engine guards ---------------------------------------------------------------------


def test_engine_names_keys_sd_mecha_dropped(sd1_host, tiny_sd1_paths):
    from sd_optim.search import blocks

    diffuser = blocks.component_keys("sd1-ldm", "diffuser")
    alpha = sd_mecha.literal({k: 0.3 for k in diffuser}, config="sd1-ldm")  # no `| fallback`
    recipe = resolve("weighted_sum")(model(tiny_sd1_paths[0], "sd1-ldm"), model(tiny_sd1_paths[1], "sd1-ldm"),
                                     alpha=alpha)
    with sd1_host.open_slot() as slot, pytest.raises(MergeError) as info:
        MergeEngine().apply(recipe, slot, "sd1-ldm")
    message = str(info.value)
    assert "sd-mecha dropped them" in message
    assert "cond_stage_model." in message or "first_stage_model." in message
    n_missing = int(message.split(" for ")[1].split(" keys")[0])
    assert n_missing == len(set(load(tiny_sd1_paths[0])) - set(diffuser))
    # the slot was put back on exit
    original = load(tiny_sd1_paths[0])
    with sd1_host.open_slot() as slot:
        key = diffuser[5]
        assert torch.equal(slot[key], original[key])


def test_merges_never_alter_the_cached_inputs(sd1_host, tiny_sd1_paths, tiny_sd1_config_dir):
    engine = MergeEngine()
    everywhere = {c: ["single"] for c in ("diffuser", "clip_l", "vae")}
    two = [{"path": str(p), "name": n} for p, n in zip(tiny_sd1_paths[:2], NAMES)]
    runs = [  # alpha 0 and 1: sd-mecha hands back the input tensor itself
        ({"merge": {"method": "weighted_sum"}, "guide": everywhere, "models": two}, 0.0),
        ({"merge": {"method": "weighted_sum"}, "guide": everywhere, "models": two}, 1.0),
        ({"merge": {"method": "add_difference"}, "base_model": "c"}, 0.8),
    ]
    for overrides, value in runs:
        config = make_config(tiny_sd1_paths, tiny_sd1_config_dir, **overrides)
        planner = make_planner(config, "sd1-ldm")
        with sd1_host.open_slot() as slot:
            engine.apply(planner.recipe({p.name: value for p in planner.space.params}), slot, "sd1-ldm")
            key = "model.diffusion_model.input_blocks.1.1.proj_in.weight"
            cached = [engine.cached(p)[key] for p in tiny_sd1_paths]
            assert all(slot[key].data_ptr() != t.data_ptr() for t in cached)
            if value == 0.0:
                assert torch.equal(slot[key], load(tiny_sd1_paths[0])[key])
    assert len(engine._cache) == 3
    for path in tiny_sd1_paths:
        cached = engine.cached(path)
        for key, value in load(path).items():
            assert torch.equal(cached[key], value), (path.name, key)


@pytest.mark.parametrize("config_name, merge_space", [("sd1-ldm", None), ("sdxl-sgm", "param")])
def test_trusted_literal_is_the_literal_sd_mecha_checks(config_name, merge_space):
    """The key-wise literal built without sd-mecha's per-value check is the checked one: same
    values, config and merge space, same text; equal and hashed alike where sd-mecha compares
    nodes by structure (a merge space given)."""
    keys = list(sd_mecha.extensions.model_configs.resolve(config_name).keys())[:50]
    values = {k: i / 50 for i, k in enumerate(keys)}
    checked = sd_mecha.recipe_nodes.LiteralRecipeNode(dict(values), model_config=config_name, merge_space=merge_space)
    trusted = trusted_literal(dict(values), config_name, merge_space)
    assert trusted.value_dict == checked.value_dict
    if merge_space:
        assert trusted == checked and hash(trusted) == hash(checked)
    assert recipe_text(trusted | 0.5) == recipe_text(checked | 0.5)
    assert trusted.model_config == checked.model_config and trusted.merge_space == checked.merge_space
