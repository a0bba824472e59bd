"""Recipe mode: find every tunable hyperparameter of a multi-node .mecha and substitute values."""

import sd_mecha
from sd_mecha.extensions import merge_methods

from sd_optim.config import config_from_dict
from sd_optim.recipe_mode import RecipePlanner, find_sites
from sd_optim.recipes import load_recipe_text, recipe_text


def multi_node_recipe():
    a, b, c = (sd_mecha.model(f"/models/{n}.safetensors", config="sd1-ldm") for n in "abc")
    blocks = sd_mecha.convert(sd_mecha.literal({"IN04": 0.3, "BASE": 0.1}, config="sd1-supermerger_blocks"), "sd1-ldm")
    shared = sd_mecha.weighted_sum(a, b, alpha=blocks)
    diff = merge_methods.resolve("add_difference")(shared, sd_mecha.subtract(b, c), alpha=0.7)
    per_key = sd_mecha.literal({"model.diffusion_model.out.0.weight": 0.2}, config="sd1-ldm") | 0.5
    return sd_mecha.weighted_sum(diff, shared, alpha=per_key)


EXPECTED_SITES = {
    "&5.alpha[IN04]": 0.3, "&5.alpha[BASE]": 0.1, "&11.alpha": 0.7,
    "&18.alpha[model.diffusion_model.out.0.weight]": 0.2, "&18.alpha": 0.5,
}


def test_sites_found_through_converters_and_fallbacks():
    recipe = load_recipe_text(recipe_text(multi_node_recipe()))
    sites = {s.name: s.value for s in find_sites(recipe)}
    assert sites == EXPECTED_SITES


def planner(tmp_path, guide=None):
    path = tmp_path / "merge.mecha"
    path.write_text(recipe_text(multi_node_recipe()))
    config = config_from_dict({"mode": "recipe", "recipe": {"path": str(path)},
                               "models": ["/models/a.safetensors"], "payloads": [{"prompt": "x"}],
                               "scorers": ["image_stats"], "guide": guide or {}})
    return RecipePlanner(config, "sd1-ldm")


def test_substitution_rebuilds_without_mutating_and_keeps_sharing(tmp_path):
    p = planner(tmp_path)
    before = recipe_text(p.source)
    # distinct values: sd-mecha's serializer merges identical literal lines into one node
    params = {name: 0.9 - i / 10 for i, name in enumerate(EXPECTED_SITES)}
    new = p.recipe(params)
    assert recipe_text(p.source) == before  # the loaded recipe is untouched
    again = {s.name: s.value for s in find_sites(load_recipe_text(recipe_text(new)))}
    assert again == params
    # the weighted_sum used twice is still one node in the rebuilt graph
    outer = new
    inner_shared = outer.bound_args.arguments["b"]
    via_diff = outer.bound_args.arguments["a"].bound_args.arguments["a"]
    assert inner_shared is via_diff
    # same number of instructions: nothing duplicated
    assert len(recipe_text(new).splitlines()) == len(before.splitlines())


def test_guide_chooses_sites_by_pattern_method_and_parameter(tmp_path):
    assert [x.name for x in planner(tmp_path, {"recipe": {"include": ["add_difference"]}}).space.params] == ["&11.alpha"]
    names = [x.name for x in planner(tmp_path, {"recipe": {"include": ["&5.*"]}}).space.params]
    assert names == ["&5.alpha[IN04]", "&5.alpha[BASE]"]
    names = [x.name for x in planner(tmp_path, {"recipe": {"exclude": ["*]"]}}).space.params]
    assert names == ["&11.alpha", "&18.alpha"]


def test_bounds_and_fixed_values_in_recipe_mode(tmp_path):
    p = planner(tmp_path, {"recipe": {"include": ["&11.alpha", "&18.alpha"]},
                           "bounds": {"&11.alpha": {"low": 0.5, "high": 2.0}, "&18.alpha": 0.25}})
    assert [x.name for x in p.space.params] == ["&11.alpha"]
    d = p.space.params[0].distribution
    assert (d.low, d.high) == (0.5, 2.0)
    sites = {s.name: s.value for s in find_sites(load_recipe_text(p.recipe_text({"&11.alpha": 1.5})))}
    assert sites["&11.alpha"] == 1.5 and sites["&18.alpha"] == 0.25
