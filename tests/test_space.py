"""The search space is a pure function of (config, model config): table tests, no models."""

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from sd_optim.config import config_from_dict
from sd_optim.errors import SpaceError
from sd_optim.search.blocks import component_blocks, component_keys
from sd_optim.search.space import PerKey, build_search_space


def space_for(guide, method="weighted_sum", fixed=None, model="sd1-ldm"):
    c = config_from_dict({"models": ["a.safetensors", "b.safetensors"], "payloads": [{"prompt": "x"}],
                          "scorers": ["image_stats"], "merge": {"method": method, "fixed": fixed or {}},
                          "guide": guide})
    return build_search_space(c, model)


SD1_UNET_BLOCKS = ["BASE"] + [f"IN{i:02d}" for i in range(12)] + ["M00"] + [f"OUT{i:02d}" for i in range(12)]


@pytest.mark.parametrize("guide, names", [
    ({"diffuser": ["all"]}, [f"diffuser.{b}.alpha" for b in SD1_UNET_BLOCKS]),
    ({"clip_l": ["all"]}, ["clip_l.BASE.alpha"]),
    ({"diffuser": [{"strategy": "select", "patterns": ["IN1*", "M00"]}]},
     ["diffuser.IN10.alpha", "diffuser.IN11.alpha", "diffuser.M00.alpha"]),
    ({"diffuser": [{"strategy": "group", "groups": {"down": ["IN*"], "up": ["OUT*"]}}]},
     ["diffuser.down.alpha", "diffuser.up.alpha"]),
    ({"clip_l": ["single"], "vae": ["single"]}, ["clip_l.all.alpha", "vae.all.alpha"]),
    ({"diffuser": ["none"]}, []),
    ({"clip_l": [{"strategy": "select", "items": "keys", "patterns": ["*final_layer_norm*"]}]},
     ["clip_l.cond_stage_model.transformer.text_model.final_layer_norm.bias.alpha",
      "clip_l.cond_stage_model.transformer.text_model.final_layer_norm.weight.alpha"]),
    ({"vae": [{"strategy": "group", "items": "keys", "groups": {"dec": ["*.decoder.*"]}}]}, ["vae.dec.alpha"]),
    ({"diffuser": [{"strategy": "select", "patterns": ["OUT0*"]}, {"strategy": "single", "items": "keys"}]}, None),
])
def test_strategy_names(guide, names):
    if names is None:  # select + single over the same keys: a conflict
        with pytest.raises(SpaceError, match="both claim"):
            space_for(guide)
        return
    space = space_for(guide)
    assert [p.name for p in space.params] == names


def test_blocks_are_restricted_to_the_component():
    space = space_for({"clip_l": ["all"], "diffuser": [{"strategy": "select", "patterns": ["BASE"]}]})
    clip_base, unet_base = space.params
    assert set(clip_base.keys) == set(component_keys("sd1-ldm", "clip_l"))
    assert all(k.startswith("model.diffusion_model.") for k in unet_base.keys)
    assert not set(clip_base.keys) & set(unet_base.keys)


def test_every_key_strategy():
    space = space_for({"vae": [{"strategy": "all", "items": "keys"}]})
    assert len(space.params) == len(component_keys("sd1-ldm", "vae"))
    assert all(len(p.keys) == 1 for p in space.params)


def test_conflict_names_both_strategies():
    with pytest.raises(SpaceError) as info:
        space_for({"diffuser": [{"strategy": "select", "patterns": ["IN0*"]},
                                {"strategy": "group", "groups": {"g": ["IN04"]}}]})
    msg = str(info.value)
    assert "guide.diffuser[0] (select)" in msg and "guide.diffuser[1] (group)" in msg and "IN04" not in msg or "input_blocks.4" in msg


@pytest.mark.parametrize("bounds, check", [
    ({"alpha": {"low": 0.2, "high": 0.8}}, lambda d: isinstance(d, FloatDistribution) and (d.low, d.high) == (0.2, 0.8)),
    ({"alpha": {"low": 0.01, "high": 1, "log": True}}, lambda d: d.log),
    ({"alpha": {"low": 0, "high": 1, "step": 0.25}}, lambda d: d.step == 0.25),
    ({"alpha": {"choices": [0, 0.5, 1]}}, lambda d: isinstance(d, CategoricalDistribution) and d.choices == (0, 0.5, 1)),
    ({"clip_l.all.alpha": {"low": 0.4, "high": 0.6}}, lambda d: (d.low, d.high) == (0.4, 0.6)),
])
def test_custom_bound_forms(bounds, check):
    space = space_for({"clip_l": ["single"], "bounds": bounds})
    assert check(space.params[0].distribution)


def test_fixed_generated_parameter_is_held_not_tuned():
    space = space_for({"diffuser": [{"strategy": "select", "patterns": ["IN0*"]}],
                       "bounds": {"diffuser.IN04.alpha": 0.3}})
    names = [p.name for p in space.params]
    assert "diffuser.IN04.alpha" not in names and "diffuser.IN05.alpha" in names
    values = space.hyper_values(space.midpoint())["alpha"]
    in04 = component_blocks("sd1-supermerger_blocks", "sd1-ldm", "diffuser")["IN04"]
    assert isinstance(values, PerKey) and all(values.values[k] == 0.3 for k in in04)
    assert values.default == 0.5  # weighted_sum's default for keys no strategy covers


def test_none_strategy_on_selected_keys():
    # none claims the keys it matches, so a second strategy over the same keys is a conflict
    with pytest.raises(SpaceError, match="both claim"):
        space_for({"vae": [{"strategy": "none", "items": "keys", "patterns": ["*.decoder.*"]},
                           {"strategy": "single", "items": "keys"}]})
    space = space_for({"vae": [{"strategy": "none", "items": "keys", "patterns": ["*.decoder.*"],
                                "fixed": {"alpha": 1.0}},
                               {"strategy": "select", "items": "keys", "patterns": ["*.encoder.*"]}]})
    decoder = [k for k in component_keys("sd1-ldm", "vae") if ".decoder." in k]
    assert decoder and all(space.fixed["alpha"][k] == 1.0 for k in decoder)
    assert all(".encoder." in p.keys[0] for p in space.params)


def test_none_strategy_fixed_values():
    space = space_for({"vae": [{"strategy": "none", "fixed": {"alpha": 0.0}}], "clip_l": ["single"]})
    v = space.hyper_values({"clip_l.all.alpha": 0.9})["alpha"]
    assert all(v.values[k] == 0.0 for k in component_keys("sd1-ldm", "vae"))
    assert all(v.values[k] == 0.9 for k in component_keys("sd1-ldm", "clip_l"))


def test_hyperparameters_discovered_from_signature():
    space = space_for({"clip_l": ["single"]}, method="add_cosine_a")
    assert [p.hyper for p in space.params] == ["alpha"]
    # tensor_sum has two float hyperparameters: width and offset
    space = space_for({"clip_l": ["single"]}, method="tensor_sum")
    assert sorted(p.hyper for p in space.params) == ["offset", "width"]
    space = space_for({"clip_l": [{"strategy": "single", "params": ["width"]}]}, method="tensor_sum")
    assert [p.name for p in space.params] == ["clip_l.all.width"]


def test_integer_hyperparameters_need_bounds():
    with pytest.raises(SpaceError, match="integer hyperparameter 'seed' needs explicit bounds"):
        space_for({"clip_l": [{"strategy": "single", "params": ["seed"]}]}, method="dropout",
                  fixed={})
    space = space_for({"clip_l": [{"strategy": "single", "params": ["seed"]}],
                       "bounds": {"seed": {"low": 0, "high": 9}}}, method="dropout")
    assert isinstance(space.params[0].distribution, IntDistribution)


def test_merge_fixed_removes_hyper_and_unknown_is_error():
    space = space_for({"clip_l": ["single"]}, method="tensor_sum", fixed={"offset": 0.1})
    assert [p.hyper for p in space.params] == ["width"]
    with pytest.raises(SpaceError, match="merge.fixed.beta"):
        space_for({"clip_l": ["single"]}, fixed={"beta": 0.1})


@pytest.mark.parametrize("guide, message", [
    ({"unet": ["single"]}, "guide.unet: not a component of sd1-ldm"),
    ({"diffuser": [{"strategy": "select", "patterns": ["IN99"]}]}, "pattern matches nothing, got 'IN99'"),
    ({"clip_l": [{"strategy": "single", "params": ["beta"]}]}, "not a tunable hyperparameter of weighted_sum, got 'beta'"),
])
def test_guide_errors(guide, message):
    with pytest.raises(SpaceError, match=message.replace("[", r"\[").replace("(", r"\(")):
        space_for(guide)


def test_sdxl_components():
    space = space_for({"clip_g": ["single"], "diffuser": [{"strategy": "select", "patterns": ["IN0[78]"]}]},
                      model="sdxl-sgm")
    assert [p.name for p in space.params] == ["clip_g.all.alpha", "diffuser.IN07.alpha", "diffuser.IN08.alpha"]


def test_cheap_enough_for_a_live_preview():
    import time

    start = time.perf_counter()
    space_for({"diffuser": [{"strategy": "all", "items": "keys"}]})
    assert time.perf_counter() - start < 5  # generous: it is a preview, run on every edit


def test_bounds_typo_is_an_error_with_a_suggestion():
    with pytest.raises(SpaceError, match=r"guide.bounds.diffuser.IN99.alpha: not a tuned .*did you mean 'diffuser.IN09.alpha'"):
        space_for({"diffuser": ["all"], "bounds": {"diffuser.IN99.alpha": {"low": 0.1, "high": 0.2}}})
    with pytest.raises(SpaceError, match="guide.blocks: no sd-mecha converter"):
        space_for({"diffuser": ["all"], "blocks": "sdxl-supermerger_blocks"})


def test_fingerprint_sees_keys_and_fixed_values():
    a = space_for({"diffuser": [{"strategy": "group", "groups": {"g": ["OUT*"]}}]})
    b = space_for({"diffuser": [{"strategy": "group", "groups": {"g": ["OUT0*"]}}]})
    assert [p.name for p in a.params] == [p.name for p in b.params] and a.fingerprint() != b.fingerprint()
    c = space_for({"diffuser": ["single"], "vae": [{"strategy": "none", "fixed": {"alpha": 0.0}}]})
    d = space_for({"diffuser": ["single"], "vae": [{"strategy": "none", "fixed": {"alpha": 1.0}}]})
    assert c.fingerprint() != d.fingerprint()
