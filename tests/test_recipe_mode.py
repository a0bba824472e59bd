"""Recipe mode: find every tunable hyperparameter of a multi-node .mecha and substitute values."""

import pytest
import sd_mecha
from sd_mecha.extensions import merge_methods

from sd_optim.config import config_from_dict
from sd_optim.search.recipe_mode import RecipePlanner, find_sites
from sd_optim.search.recipes import load_recipe_text, recipe_text


def multi_node_recipe(paths=("/models/a.safetensors", "/models/b.safetensors", "/models/c.safetensors")):
    a, b, c = (sd_mecha.model(str(p), config="sd1-ldm") for p in paths)
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


@pytest.fixture
def planner(tmp_path, tiny_sd1_paths):
    def make(guide=None):
        return _planner(tmp_path, tiny_sd1_paths, guide)
    return make


def _planner(tmp_path, paths, guide=None):
    path = tmp_path / "merge.mecha"
    path.write_text(recipe_text(multi_node_recipe(paths)))
    config = config_from_dict({"mode": "recipe", "recipe": {"path": str(path)},
                               "models": [str(paths[0])], "payloads": [{"prompt": "x"}],
                               "scorers": ["image_stats"], "guide": guide or {}})
    return RecipePlanner(config, "sd1-ldm")


def test_substitution_rebuilds_without_mutating_and_keeps_sharing(planner):
    p = planner()
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


def test_guide_chooses_sites_by_pattern_method_and_parameter(planner):
    assert [x.name for x in planner({"recipe": {"include": ["add_difference"]}}).space.params] == ["&11.alpha"]
    names = [x.name for x in planner({"recipe": {"include": ["&5.*"]}}).space.params]
    assert names == ["&5.alpha[IN04]", "&5.alpha[BASE]"]
    names = [x.name for x in planner({"recipe": {"exclude": ["*]"]}}).space.params]
    assert names == ["&11.alpha", "&18.alpha"]


def test_bounds_and_fixed_values_in_recipe_mode(planner):
    p = planner({"recipe": {"include": ["&11.alpha", "&18.alpha"]},
                           "bounds": {"&11.alpha": {"low": 0.5, "high": 2.0}, "&18.alpha": 0.25}})
    assert [x.name for x in p.space.params] == ["&11.alpha"]
    d = p.space.params[0].distribution
    assert (d.low, d.high) == (0.5, 2.0)
    sites = {s.name: s.value for s in find_sites(load_recipe_text(p.recipe_text({"&11.alpha": 1.5})))}
    assert sites["&11.alpha"] == 1.5 and sites["&18.alpha"] == 0.25


def test_recipe_mode_refusals(planner, tmp_path):
    from sd_optim.errors import SpaceError

    with pytest.raises(SpaceError, match="guide.bounds.&99.alpha: not a site"):
        planner({"bounds": {"&99.alpha": {"low": 0, "high": 1}}})
    with pytest.raises(SpaceError, match="guide.recipe: no site of merge.mecha to tune"):
        planner({"recipe": {"include": ["nothing*"]}})
    with pytest.raises(SpaceError, match="uses models that do not exist: /models/a.safetensors"):
        _planner(tmp_path, ("/models/a.safetensors", "/models/b.safetensors", "/models/c.safetensors"))


def test_two_scalar_sites_on_one_argument_get_distinct_names():
    a, b = (sd_mecha.model(f"/m/{n}.safetensors", config="sd1-ldm") for n in "ab")
    recipe = sd_mecha.weighted_sum(a, b, alpha=sd_mecha.literal(0.3) | 0.6)
    sites = {s.name: s.value for s in find_sites(load_recipe_text(recipe_text(recipe)))}
    assert sites == {"&9.alpha": 0.3, "&9.alpha[default]": 0.6}
