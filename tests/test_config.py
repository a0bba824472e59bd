"""Run config loading and validation: every problem names its field and value."""

import ast
import pickle
from pathlib import Path

import pytest

import sd_optim
from sd_optim.config import config_from_dict, load_config, save_config
from sd_optim.errors import ConfigError, Problem

BASE = {
    "models": ["a.safetensors", "b.safetensors"],
    "payloads": [{"prompt": "a cat"}],
    "scorers": ["image_stats"],
}


def with_(**changes):
    return {**BASE, **changes}


def problems(data):
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    return info.value.problems


def test_minimal_config_gets_defaults():
    c = config_from_dict(BASE)
    assert [m.name for m in c.models] == ["a", "b"]
    assert c.host_model == "a"
    assert c.payloads[0].steps == 20 and c.payloads[0].sampler == "Euler a"
    assert c.optimizer.sampler == "tpe" and c.mode == "merge"


@pytest.mark.parametrize("data, expected", [
    (with_(payloads=[{"prompt": "x"}, {"prompt": "y"}, {"prompt": "z", "steps": 0}]),
     "payloads[2].steps: must be >= 1, got 0"),
    (with_(payloads=[{"prompt": "x", "width": 500}]), "payloads[0].width: must be a multiple of 8, got 500"),
    (with_(payloads=[{"prompt": "x", "cfg_scale": "high"}]), "payloads[0].cfg_scale: must be a number, got 'high'"),
    (with_(payloads=[{"prompt": "x", "scorers": ["nope"]}]),
     "payloads[0].scorers[0]: must name a configured scorer (image_stats), got 'nope'"),
    (with_(models=["a.safetensors"]), "models: merge mode needs at least two checkpoints; given: a.safetensors"),
    (with_(mode="blend"), "mode: must be one of merge, recipe, got 'blend'"),
    (with_(merge_precision="fp8"), "merge_precision: must be one of fp32, fp16, bf16, got 'fp8'"),
    (with_(scoring={"normalize": "yes"}), "scoring.normalize: must be true or false, got 'yes'"),
    (with_(optimizer={"sampler": "annealing"}), "optimizer.sampler: must be one of"),
    (with_(optimizer={"trials": 0}), "optimizer.trials: must be >= 1, got 0"),
    (with_(optimizer={"baseline": ["best"]}), "optimizer.baseline[0]: must be one of defaults, midpoint"),
    (with_(base_model="c"), "base_model: must name one of the models (a, b), got 'c'"),
    (with_(guide={"diffuser": [{"strategy": "select"}]}), "guide.diffuser[0].patterns: select needs"),
    (with_(guide={"diffuser": [{"strategy": "sometimes"}]}), "guide.diffuser[0].strategy: must be one of"),
    (with_(guide={"bounds": {"alpha": {"low": 1, "high": 0}}}), "guide.bounds.alpha.high: must be greater than low"),
    (with_(scoring={"scorer_mean": "median"}), "scoring.scorer_mean: must be one of"),
    (with_(payload=[]), "payload: unknown field (did you mean 'payloads'?)"),
    (with_(mode="recipe"), "recipe.path: recipe mode needs a .mecha file"),
    (with_(loras=[{"path": "l.safetensors", "apply_to": "zzz"}]), "loras[0].apply_to: must name one of the models"),
])
def test_bad_configs_name_field_and_value(data, expected):
    found = problems(data)
    assert any(p.startswith(expected) for p in found), found


def test_every_problem_is_reported_at_once():
    found = problems(with_(payloads=[{"prompt": "x", "steps": 0, "seed": -1}], optimizer={"trials": 0}))
    assert len(found) == 3


def test_yaml_round_trip(tmp_path):
    c = config_from_dict(with_(guide={"diffuser": [{"strategy": "group", "groups": {"early": ["IN0*"]}}],
                                      "bounds": {"alpha": {"low": 0.1, "high": 0.9}}}))
    save_config(c, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert again.guide.components["diffuser"][0].groups == {"early": ["IN0*"]}
    assert again.guide.bounds["alpha"].low == 0.1
    assert again.payloads == c.payloads


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("models: [a\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_example_configs_load():
    from pathlib import Path

    examples = sorted((Path(__file__).parents[1] / "examples").glob("*.yaml"))
    assert len(examples) >= 3
    for path in examples:
        load_config(path)


@pytest.mark.parametrize("data, expected", [
    (with_(device="gpu"), "device: must be auto, cpu, cuda, cuda:N or mps, got 'gpu'"),
    (with_(scorers=[{"name": "image_stats", "weight": 0}]), "scorers: at least one scorer needs a weight > 0"),
    (with_(payloads=[{"prompt": "x", "weight": 0}]), "payloads: at least one prompt set needs a weight > 0"),
    (with_(guide={"bounds": {"alpha": {"log": True}}}), "guide.bounds.alpha.low: log: true needs an explicit low"),
    (with_(guide={"bounds": {"alpha": {"choices": [{"a": 1}]}}}), "guide.bounds.alpha.choices[0]: must be a number"),
    (with_(guide={"bounds": {"diffuser.IN00.alpha": "abc"}}), "guide.bounds.diffuser.IN00.alpha: must be a number"),
    (with_(guide={"vae": [{"strategy": "none", "fixed": {"alpha": "high"}}]}),
     "guide.vae[0].fixed.alpha: must be a number, got 'high'"),
])
def test_more_bad_values(data, expected):
    found = problems(data)
    assert any(p.startswith(expected) for p in found), found


def test_zero_bounds_and_fixed_values_survive_the_round_trip(tmp_path):
    c = config_from_dict(with_(guide={"bounds": {"alpha": {"low": -1, "high": 0},
                                                 "diffuser.IN00.alpha": 0}}))
    save_config(c.absolute(), tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert (again.guide.bounds["alpha"].low, again.guide.bounds["alpha"].high) == (-1, 0)
    assert again.guide.bounds["diffuser.IN00.alpha"].fixed == 0


@pytest.mark.parametrize("payload, expected", [
    ({"width": 100000}, "payloads[0].width: must be <= 4096, got 100000"),
    ({"height": 100000}, "payloads[0].height: must be <= 4096, got 100000"),
    ({"batch_size": 65}, "payloads[0].batch_size: must be <= 64, got 65"),
])
def test_image_size_and_batch_have_a_maximum(payload, expected):
    assert expected in problems(with_(payloads=[{"prompt": "x", **payload}]))
    c = config_from_dict(with_(payloads=[{"prompt": "x", "width": 4096, "height": 4096, "batch_size": 64}]))
    assert (c.payloads[0].width, c.payloads[0].height, c.payloads[0].batch_size) == (4096, 4096, 64)


def test_empty_choices_are_an_error_not_ignored():
    assert "guide.bounds.alpha.choices: needs at least one choice (or leave choices out), got []" in problems(
        with_(guide={"bounds": {"alpha": {"choices": []}}}))


def test_a_long_bad_value_is_cut_short():
    [problem] = problems(with_(payloads=[{"prompt": "x", "cfg_scale": "y" * 5000}]))
    assert problem.startswith("payloads[0].cfg_scale: must be a number, got 'yyy")
    assert problem.endswith("…") and len(problem) < 300


def test_a_binary_config_file_names_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_bytes(b"models: [\xff\xfe]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [
        f"config file: not UTF-8 text (a YAML file is expected; byte 9 is b'\\xff'), got {str(path)!r}"]


def test_a_problem_is_an_object_with_its_field_value_and_message():
    [problem] = problems(with_(payloads=[{"prompt": "a cat", "steps": 0}]))
    assert isinstance(problem, Problem)
    assert (problem.field, problem.message, problem.value) == ("payloads[0].steps", "must be >= 1", 0)
    assert problem == "payloads[0].steps: must be >= 1, got 0"  # and its own one-line text
    assert problem.as_dict() == {"field": "payloads[0].steps", "message": "must be >= 1", "got": "0",
                                 "text": "payloads[0].steps: must be >= 1, got 0"}
    again = pickle.loads(pickle.dumps(problem))  # a run thread's error crossing a process keeps its parts
    assert (again.field, again.value) == ("payloads[0].steps", 0)


def test_a_problem_without_a_value_shows_none():
    problem = Problem("scorers", "at least one scorer is required")
    assert problem == "scorers: at least one scorer is required" and "got" not in problem.as_dict()
    assert Problem("x", "is wrong", None) == "x: is wrong, got None"  # None is a value


def test_a_config_error_given_text_keeps_it_as_a_problem_about_no_field():
    [problem] = ConfigError(["something happened"]).problems
    assert problem.field == "" and problem == "something happened"


def _text_problems(path: Path) -> list[str]:
    """Places in ``path`` that build a problem from text (a ConfigError / SpaceError given an
    f-string or a string literal, or one appended to a list of problems)."""
    def is_text(node):
        return isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, str)) \
            or (isinstance(node, ast.BinOp) and (is_text(node.left) or is_text(node.right)))

    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
        if name in ("ConfigError", "SpaceError") and isinstance(node.args[0], ast.List):
            found += [f"{path}:{e.lineno}" for e in node.args[0].elts if is_text(e)]
        elif name == "append" and "problem" in ast.unparse(node.func) and is_text(node.args[0]):
            found.append(f"{path}:{node.lineno}")
    return found


def test_problems_are_built_with_their_field_not_as_text():
    package = Path(sd_optim.__file__).parent
    found = [place for path in sorted(package.rglob("*.py")) for place in _text_problems(path)]
    assert not found, "build these as Problem(field, message, value): " + ", ".join(found)


def test_what_a_set_up_still_lacks_is_marked_incomplete():
    lacking = problems({"models": ["a.safetensors"], "payloads": [{"prompt": ""}]})
    assert {p.field: p.incomplete for p in lacking} == {"models": True, "payloads[0].prompt": True,
                                                        "scorers": True}
    [wrong] = problems(with_(payloads=[{"prompt": "a cat", "steps": 0}]))
    assert not wrong.incomplete
    assert pickle.loads(pickle.dumps(lacking[0])).incomplete
