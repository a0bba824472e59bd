"""``layer_adjust`` (sd_optim/search/adjust.py): SuperMerger's Adjust as an sd-mecha merge method,
tuned in merge mode on one model (or inside a recipe after a merge), exported in best.mecha."""

import numpy as np
import optuna
import pytest
import safetensors.torch
import sd_mecha
import torch
from test_runner import make_config, run

from sd_optim.config import config_from_dict
from sd_optim.errors import ConfigError
from sd_optim.merging import MergeEngine
from sd_optim.run.runner import Runner
from sd_optim.search import adjust
from sd_optim.search.planning import make_planner
from sd_optim.tiny_models import TINY_SIZE

optuna.logging.set_verbosity(optuna.logging.WARNING)

SETS = [{"name": f"p{seed}", "prompt": "a red fox", "seed": seed, "steps": 4, "sampler": "Euler",
         "width": TINY_SIZE, "height": TINY_SIZE} for seed in range(3)]


def adjust_config(paths, config_dir, out, values=("brightness",), **more):
    return make_config(paths, config_dir, out, models=[{"path": str(paths[0]), "name": "a"}],
                       merge={"method": "layer_adjust"}, payloads=SETS,
                       guide={"diffuser": [{"strategy": "single", "params": list(values)}],
                              "clip_l": [{"strategy": "none"}]}, **more)


def test_zero_changes_nothing_and_each_value_moves_its_tensors_as_supermerger_does():
    zero = adjust.factors({}, "sd1")
    assert all(zero[k] == 1.0 for k in adjust.KEYS[:5]) and zero[adjust.OUT_BIAS] == [0.0, 0.0, 0.0, 0.0]
    f = adjust.factors({"detail_in": 2, "detail_out": -1, "detail_out2": 3, "contrast": 1}, "sd1")
    assert f[adjust.IN_WEIGHT] == pytest.approx(0.98) and f[adjust.IN_BIAS] == pytest.approx(1.04)
    assert f[adjust.NORM_WEIGHT] == pytest.approx(1.01) and f[adjust.NORM_BIAS] == pytest.approx(0.98)
    assert f[adjust.OUT_WEIGHT] == pytest.approx(0.97) and f[adjust.OUT_BIAS][0] == pytest.approx(0.02)
    # brightness along each architecture's latent direction (SuperMerger's COLS / COLSXL), 0.02 a unit
    assert adjust.factors({"brightness": 1}, "sd1")[adjust.OUT_BIAS][1:] == pytest.approx([-0.02, 0.02 / 3, 0.04 / 3])
    assert adjust.factors({"brightness": 1}, "sdxl")[adjust.OUT_BIAS][1:] == pytest.approx([0.0, 0.0, 0.02])
    assert adjust.factors({"cyan_red": 1, "yellow_blue": 1}, "sd1")[adjust.OUT_BIAS][1:] == pytest.approx(
        [0.04, 0.02, 0.02])


def test_sd_mecha_merges_it_changing_the_six_tensors_only(tiny_sd1_paths, tmp_path):
    original = safetensors.torch.load_file(str(tiny_sd1_paths[0]))
    model = sd_mecha.model(str(tiny_sd1_paths[0]), config="sd1-ldm")
    out = tmp_path / "adjusted.safetensors"
    sd_mecha.merge(adjust.layer_adjust(model, detail_in=2.0, brightness=3.0, contrast=-1.0), output=out,
                   merge_dtype=torch.float32, output_dtype=torch.float32)
    merged = safetensors.torch.load_file(str(out))
    changed = {k for k in original if not torch.equal(original[k], merged[k])}
    assert changed == {adjust.IN_WEIGHT, adjust.IN_BIAS, adjust.OUT_BIAS}
    f = adjust.factors({"detail_in": 2.0, "brightness": 3.0, "contrast": -1.0}, "sd1")
    assert torch.allclose(merged[adjust.IN_WEIGHT], original[adjust.IN_WEIGHT] * f[adjust.IN_WEIGHT])
    assert torch.allclose(merged[adjust.OUT_BIAS], original[adjust.OUT_BIAS] + torch.tensor(f[adjust.OUT_BIAS]))


def _mean_pixel(config, host, value, name="brightness"):
    planner = make_planner(config, host.model_config())
    with host.open_slot() as slot:
        MergeEngine(device=host.device).apply(planner.recipe({f"diffuser.all.{name}": value}), slot,
                                              planner.model_config)
        return float(np.mean([np.asarray(img.image, dtype=float).mean()
                              for _, job in Runner(config, host)._jobs() for img in host.generate(job)]))


def test_brightness_moves_the_images_steadily_one_way(sd1_host, tiny_sd1_paths, tiny_sd1_config_dir, tmp_path):
    """On the tiny models the direction itself is not SuperMerger's: their VAE is random, so a latent
    direction means no particular colour; what must hold is a steady move with the value, and none at 0."""
    config = adjust_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path)
    means = [_mean_pixel(config, sd1_host, v) for v in (-4.0, 0.0, 4.0)]
    assert means[0] != means[1] != means[2] and (means[0] < means[1] < means[2] or means[0] > means[1] > means[2])


def test_a_run_tunes_one_model_alone_and_its_best_mecha_merges_with_plain_sd_mecha(
        sd1_host, tiny_sd1_paths, tiny_sd1_config_dir, tmp_path):
    config = adjust_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path, values=("brightness", "detail_out"),
                           optimizer={"sampler": "random", "trials": 3, "seed": 0, "study": "adj"})
    done = run(config, sd1_host)
    assert done.completed == 3 and set(done.best_params) == {"diffuser.all.brightness", "diffuser.all.detail_out"}
    assert all(-4.0 <= v <= 4.0 for v in done.best_params.values())  # the method's own span, not 0-1
    text = (tmp_path / "adj" / "best.mecha").read_text(encoding="utf-8")
    assert "layer_adjust" in text
    out = tmp_path / "best.safetensors"
    sd_mecha.merge(sd_mecha.deserialize(text), output=out, merge_dtype=torch.float32, output_dtype=torch.float32)
    merged = safetensors.torch.load_file(str(out))
    original = safetensors.torch.load_file(str(tiny_sd1_paths[0]))
    f = adjust.factors({"brightness": done.best_params["diffuser.all.brightness"],
                        "detail_out": done.best_params["diffuser.all.detail_out"]}, "sd1")
    assert torch.allclose(merged[adjust.NORM_WEIGHT], original[adjust.NORM_WEIGHT] * f[adjust.NORM_WEIGHT])
    assert torch.allclose(merged[adjust.OUT_BIAS], original[adjust.OUT_BIAS] + torch.tensor(f[adjust.OUT_BIAS]))


def test_after_a_merge_in_a_recipe(sd1_host, tiny_sd1_paths, tiny_sd1_config_dir, tmp_path):
    """Recipe mode tunes layer_adjust's values after a merge like any method's (sd-mecha writes equal
    values as one literal, one site: the values to tune are given apart, here brightness 0.25)."""
    a, b = (sd_mecha.model(str(p), config="sd1-ldm") for p in tiny_sd1_paths[:2])
    recipe = tmp_path / "adjusted.mecha"
    sd_mecha.serialize(adjust.layer_adjust(sd_mecha.weighted_sum(a, b, alpha=0.5), brightness=0.25), output=recipe)
    config = make_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path, mode="recipe", recipe={"path": str(recipe)},
                         merge=None, guide={"bounds": {"brightness": {"low": -2, "high": 2}},
                                            "recipe": {"include": ["*brightness*"]}},
                         optimizer={"sampler": "random", "trials": 2, "seed": 0, "study": "rec"})
    done = run(config, sd1_host)
    assert done.completed == 2 and len(done.best_params) == 1
    assert -2 <= next(iter(done.best_params.values())) <= 2
    without_bounds = make_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path, mode="recipe", merge=None,
                                 recipe={"path": str(recipe)}, guide={"recipe": {"include": ["*brightness*"]}})
    (dist,) = make_planner(without_bounds, "sd1-ldm").space.distributions().values()
    assert (dist.low, dist.high) == adjust.SPAN  # the method's own span, as in merge mode


def test_merge_mode_takes_one_model_for_layer_adjust_only():
    base = {"payloads": [{"prompt": "x"}], "scorers": ["image_stats"]}
    config_from_dict({**base, "models": ["a.safetensors"], "merge": {"method": "layer_adjust"}})
    with pytest.raises(ConfigError, match="merge mode needs at least two checkpoints; given: a.safetensors"):
        config_from_dict({**base, "models": ["a.safetensors"]})
