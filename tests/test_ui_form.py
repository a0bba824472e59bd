"""The tab's set-up controls <-> the run config: every example config survives a round trip through
the controls, table cells parse the way a user types them, and each problem lands in its panel."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sd_optim.config import config_from_dict
from sd_optim.errors import ConfigError, Problem
from sd_optim.ui import form as fm

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_config_round_trips_through_the_controls(example):
    data = yaml.safe_load(example.read_text(encoding="utf-8"))
    controls = fm.data_to_form(data)
    assert config_from_dict(fm.form_to_data(controls)) == config_from_dict(data)


def test_a_full_set_up_round_trips_with_custom_names_loras_bounds_and_study_options():
    data = {
        "models": [{"path": "/m/a.safetensors", "name": "alpha"}, "/m/b.safetensors", "/m/base.safetensors"],
        "base_model": "base", "host_model": "b",
        "loras": [{"path": "/l/detail.safetensors", "apply_to": "b", "strength": 0.5}],
        "merge": {"method": "add_difference", "fixed": {"alpha": None}},
        "guide": {"diffuser": [{"strategy": "group", "groups": {"in": ["IN0*", "IN1*"], "out": ["OUT*"]}},
                               {"strategy": "select", "patterns": ["M00"], "params": ["alpha"]}],
                  "clip_l": [{"strategy": "none", "fixed": {"alpha": 0.25}}],
                  "bounds": {"alpha": {"low": 0.1, "high": 0.9, "step": 0.1},
                             "diffuser.in.alpha": {"choices": [0.2, 0.4]}}},
        "payloads": [{"name": "cat", "prompt": "a cat", "negative_prompt": "blurry", "seed": 3, "steps": 12,
                      "cfg_scale": 6.5, "sampler": "DPM++ 2M", "scheduler": "Karras", "width": 640,
                      "height": 448, "batch_size": 2, "weight": 2.0, "scorers": ["image_stats"]}],
        "scorers": [{"name": "image_stats", "weight": 0.5, "options": {"sharpness": 2.0}},
                    {"name": "reference", "options": {"folder": "refs"}}],
        "scoring": {"scorer_mean": "geometric", "payload_mean": "quadratic"},
        "optimizer": {"sampler": "cmaes", "trials": 30, "seed": 7, "sampler_options": {"n_startup_trials": 4},
                      "pruner": "percentile", "pruner_options": {"percentile": 30.0, "n_warmup_steps": 1}, "confirm_top": 3, "max_suggest_s": 2.5,
                      "early_stopping": {"patience": 5, "min_improvement": 0.01}, "baseline": ["midpoint"],
                      "start_from": [{"diffuser.in.alpha": 0.3, "&7.alpha[IN04]": 0.5}, {"clip_l.all.alpha": 1}],
                      "start_from_study": "coarse",
                      "score_inputs": True, "on_trial_error": "stop", "storage": "sqlite:///x.db",
                      "study": "mine"},
        "after_run": {"keep_best": True, "save_best": True, "save_name": "best-merge"},
        "wildcards_dir": "wild", "models_dir": "scorer-models", "device": "cpu", "output_dir": "out",
        "merge_precision": "bf16",
    }
    controls = fm.data_to_form(data)
    assert controls["merge_precision"] == "bf16"
    assert controls["model_names"] == {"/m/a.safetensors": "alpha"}
    assert controls["strategies"][0][4] == "in: IN0* IN1*; out: OUT*"
    assert config_from_dict(fm.form_to_data(controls)) == config_from_dict(data)


def test_cells_parse_as_typed_and_bad_cells_reach_validation_with_their_value():
    controls = {
        **fm.FORM_DEFAULTS,
        "models": ["/m/a.safetensors", "/m/b.safetensors"],
        "strategies": [["diffuser", "all", "", "", "", "", ""], ["", "", "", "", "", "", ""]],
        "payloads": [["p", "a cat", "", "12", 20.0, "7.5", "Euler", "Automatic", 512, "abc", 1, 1, ""]],
        "scorers": [["image_stats", "", "sharpness: 2"], ["reference", 1, ""]], "scorer_use": ["image_stats"],
        "trials": 5.0, "seed": " ",
    }
    data = fm.form_to_data(controls)
    p = data["payloads"][0]
    assert (p["seed"], p["steps"], p["cfg_scale"], p["height"]) == (12, 20, 7.5, "abc")
    assert data["scorers"] == [{"name": "image_stats", "options": {"sharpness": 2}}]  # unticked: not used
    assert data["guide"] == {"diffuser": [{"strategy": "all"}]}  # the blank row is ignored
    assert data["optimizer"]["trials"] == 5 and "seed" not in data["optimizer"]
    with pytest.raises(ConfigError) as e:
        config_from_dict(data)
    assert e.value.problems == ["payloads[0].height: must be an integer, got 'abc'"]


def test_same_file_names_in_two_folders_get_distinct_model_names():
    data = fm.form_to_data({"models": ["/x/model.safetensors", "/y/model.safetensors"]})
    assert [m["name"] for m in data["models"]] == ["model", "model-2"]


def test_recipe_sites_table_selects_and_bounds_sites():
    sites = [("&3.alpha", 0.5), ("&5.alpha[IN04]", 0.2), ("&5.alpha[OUT02]", 0.7)]
    data = {"mode": "recipe", "models": ["/m/a.safetensors"], "recipe": {"path": "r.mecha"},
            "guide": {"recipe": {"include": ["&5.*"]}, "bounds": {"&5.alpha[IN04]": {"low": 0.1, "high": 0.3}}},
            "payloads": [{"prompt": "x"}], "scorers": ["image_stats"]}
    controls = fm.data_to_form(data, sites=lambda path: sites)
    assert controls["recipe_sites"] == [["&3.alpha", 0.5, False, "", ""], ["&5.alpha[IN04]", 0.2, True, 0.1, 0.3],
                                        ["&5.alpha[OUT02]", 0.7, True, "", ""]]
    back = fm.form_to_data(controls)["guide"]
    assert back["recipe"] == {"include": ["&5.*"], "exclude": []}  # the patterns still say it
    controls["recipe_sites"][2][2] = False  # untick one: the selection becomes explicit
    controls["recipe_sites"][0][3:5] = [0.0, 0.8]
    back = fm.form_to_data(controls)["guide"]
    # the brackets of a site name are escaped: the pattern selects that site and no other
    assert fm.selected_sites([s for s, _ in sites], back["recipe"]["include"], []) == ["&5.alpha[IN04]"]
    assert back["bounds"] == {"&5.alpha[IN04]": {"low": 0.1, "high": 0.3}, "&3.alpha": {"low": 0.0, "high": 0.8}}
    again = fm.data_to_form({**data, "guide": back}, sites=lambda path: sites)
    assert [r[2] for r in again["recipe_sites"]] == [False, True, False]


@pytest.mark.parametrize("field, panel", [
    ("models[1].path", "models"),
    ("base_model", "models"),
    ("merge.method", "mode"),
    ("recipe.path", "mode"),
    ("guide.diffuser[0].patterns", "guide"),
    ("payloads[2].steps", "payloads"),
    ("scorers[0]", "scorers"),
    ("optimizer.trials", "optimizer"),
    ("after_run.save_name", "optimizer"),
    ("--resume", "optimizer"),
    ("", "other"),
])
def test_each_problem_is_shown_next_to_its_panel_by_its_field(field, panel):
    problem = Problem(field, "a message that: looks like [another] field.path", "v")
    assert fm.problems_by_panel([problem])[panel] == [problem]
    assert fm.problems_by_panel(["models: plain text names no field"])["other"] == ["models: plain text names no field"]


def test_start_as_resume_or_fork_names_the_chosen_study():
    assert fm.start_options({"start_as": "resume", "source_study": "mine"}) == {"resume": "mine"}
    assert fm.start_options({"start_as": "fork", "source_study": "mine"}) == {"fork": "mine"}
    assert fm.start_options({"start_as": "new study", "source_study": "mine"}) == {}


def test_fixed_cells_accept_equals_or_colon_and_blank_trials_mean_the_default():
    data = fm.form_to_data({"strategies": [["clip_l", "none", "", "", "", "", "alpha: 0.25, beta = 1"]],
                            "trials": None})
    assert data["guide"]["clip_l"] == [{"strategy": "none", "fixed": {"alpha": 0.25, "beta": 1}}]
    assert "trials" not in data["optimizer"]


def test_the_study_dropdown_label_resumes_the_study_itself():
    label = "weighted_sum-a-b (3 trials, best 0.9908)"
    assert fm.start_options({"start_as": "resume", "source_study": label}) == {"resume": "weighted_sum-a-b"}


def test_an_incomplete_saved_set_up_loads_back_but_a_wrong_one_does_not():
    incomplete = {"models": ["/m/a.safetensors"], "merge": {"method": "weighted_sum"}}
    assert fm.data_to_form(incomplete)["models"] == ["/m/a.safetensors"]
    with pytest.raises(ConfigError, match="optimizer.trials: must be >= 1"):
        fm.data_to_form({**incomplete, "optimizer": {"trials": 0}})


def test_custom_names_follow_the_file_however_its_path_is_spelled(tmp_path, monkeypatch):
    (tmp_path / "m").mkdir()
    monkeypatch.chdir(tmp_path)
    controls = fm.data_to_form({"models": [{"path": str(tmp_path / "m" / "a.safetensors"), "name": "A"},
                                           {"path": str(tmp_path / "m" / "b.safetensors"), "name": "B"}],
                                "base_model": "A"})
    data = fm.form_to_data(controls, path_for=lambda title: f"m/{Path(title).name}")  # a relative catalog
    assert [m["name"] for m in data["models"]] == ["A", "B"] and data["base_model"] == "A"


def test_site_patterns_match_names_nodes_and_parameters():
    names = ["&3.alpha", "&5.alpha[IN04]", "&5.beta[IN04]"]
    assert fm.selected_sites(names, ["&5"], []) == ["&5.alpha[IN04]", "&5.beta[IN04]"]
    assert fm.selected_sites(names, ["alpha"], []) == ["&3.alpha", "&5.alpha[IN04]"]
    assert fm.selected_sites(names, ["*"], ["beta"]) == ["&3.alpha", "&5.alpha[IN04]"]


def test_every_control_label_comes_from_the_config_field():
    assert fm.control_label("seed") == "Seed (empty: random)"
    assert fm.control_label("storage", help="empty: the settings' storage") == \
        "Storage URL (empty: the settings' storage)"
    assert fm.control_label("trials") == "Trials"  # no help: the label alone
    assert set(fm.CONTROL_FIELDS) <= set(fm.FORM_DEFAULTS)
    for key in fm.CONTROL_FIELDS:
        assert fm.control_label(key)[0].isupper(), key


def test_the_form_starts_from_the_config_defaults():
    from sd_optim.config import OptimizerSettings, Payload

    assert fm.FORM_DEFAULTS["trials"] == OptimizerSettings().trials
    assert fm.FORM_DEFAULTS["sampler"] == OptimizerSettings().sampler
    new = fm.payload_defaults("set0", "a cat")
    assert new["steps"] == Payload.steps and new["width"] == Payload.width and new["prompt"] == "a cat"


def test_coarse_trials_round_trip_through_their_control():
    data = {"models": ["/m/a.safetensors", "/m/b.safetensors"], "payloads": [{"prompt": "x"}],
            "scorers": ["image_stats"], "optimizer": {"trials": 30, "coarse_trials": 8}}
    controls = fm.data_to_form(data)
    assert controls["coarse_trials"] == 8
    assert config_from_dict(fm.form_to_data(controls)) == config_from_dict(data)
