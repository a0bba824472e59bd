"""``import-config`` (sd_optim/import_old.py): old command-line sd-optim set-ups, written here from
its documented formats (conf/config.tmpl.yaml, conf/optimization_guide/guide.tmpl.yaml,
conf/payloads/cargo_*.yaml and cargo/<name>.yaml), as run configs that validate and run."""

import json
import textwrap

import pytest
import yaml

from sd_optim.cli import main
from sd_optim.config import load_config


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def old_setup(tmp_path, tiny_sd1_paths):
    """The newest layout: nested sections, a guide of components and strategies, a cargo file."""
    a, b, c = tiny_sd1_paths
    config = write(tmp_path / "old" / "config.yaml", f"""\
        defaults:
          - sd_optim_schema
          - _self_
          - payloads: cargo_forge
          - optimization_guide: guide
        run_name: test
        webui: forge
        url: http://localhost:7860
        paths:
          wildcards_dir: wildcards
          configs_dir: configs
        merge:
          model_paths:
            - {a}
            - {b}
            - {c}
          base_model_index: 2
          merge_method: add_difference
          merge_dtype: bf16
        optimization_mode: merge
        save_best: True
        optimizer:
          bayes: True
          optuna: False
          random_state: 7
          init_points: 3
          n_iters: 2
          bayes_config:
            sampler: sobol
            acquisition_function: {{kind: ucb, kappa: 3.0}}
        generation:
          batch_size: 1
          img_average_type: arithmetic
        scoring:
          scorer_method: [luminaflex, laion]
          scorer_average_type: geometric
          scorer_weight: {{laion: 0.5}}
          scorer_filters: {{laion: {{exclude: [house]}}}}
        """)
    guide = write(tmp_path / "old" / "guide.yaml", """\
        components:
          - name: diffuser
            optimize_params: [alpha]
            strategies:
              - type: group
                groups:
                  - name: early
                    keys: ["UNET_IN00", "UNET_IN0[1-3]"]
                  - name: mid
                    keys: ["UNET_MID00"]
              - type: select
                keys: ["UNET_OUT0*"]
          - name: clip_l
            strategies:
              - type: single
                optimize_params: [alpha]
        custom_bounds:
          alpha: "(0.1, 0.9)"
          UNET_OUT05_alpha: [0.2, 0.4]
          early_alpha: {range: [0.2, 0.6], step: 0.1}
        dependencies:
          - {parent: alpha, child: rank_ratio, condition: "!= 0", default: 1.0}
        """)
    payloads = tmp_path / "old" / "payloads"
    write(payloads / "cargo_forge.yaml", """\
        defaults:
          - cargo:
            - fox
            - house
        score_weight: 1.0
        steps: 2
        cfg_scale: 5
        width: 64
        height: 64
        sampler_name: Euler
        seed: 218
        n_iter: 1
        enable_hr: false
        hr_scale: 2
        hr_upscaler: "4x_fatal_Anime_500000_G"
        denoising_strength: 0.45
        vpred_enabled: true
        """)
    write(payloads / "cargo" / "fox.yaml", """\
        fox:
          prompt: "a red fox"
          negative_prompt: "blurry"
          score_weight: 2.0
        """)
    write(payloads / "cargo" / "house.yaml", """\
        house:
          prompt: "a house by a lake"
          clip_skip: 2
        """)
    write(payloads / "cargo" / "unused.yaml", "unused:\n  prompt: never chosen\n")
    return config, guide, payloads


def test_an_old_setup_becomes_a_run_config_and_says_what_it_left(old_setup, tmp_path, tiny_sd1_paths, capsys):
    config, guide, payloads = old_setup
    out = tmp_path / "new" / "run.yaml"
    assert main(["import-config", str(config), "--guide", str(guide), "--payloads", str(payloads),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    data = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert [m["path"] for m in data["models"]] == [str(p) for p in tiny_sd1_paths]
    assert data["merge"] == {"method": "add_difference"} and data["base_model"] == data["models"][2]["name"]
    assert data["merge_precision"] == "bf16"
    # bayes: a GP with bayes_opt's random start, init_points + n_iters trials, its seed
    assert data["optimizer"] == {"trials": 5, "sampler": "gp", "sampler_options": {"n_startup_trials": 3}, "seed": 7}
    assert data["scorers"] == [{"name": "laion_aesthetic", "weight": 0.5}]
    assert data["scoring"] == {"scorer_mean": "geometric"} and data["after_run"] == {"save_best": True}
    fox, house = data["payloads"]
    assert fox == {"name": "fox", "weight": 2.0, "steps": 2, "cfg_scale": 5, "width": 64, "height": 64,
                   "sampler": "Euler", "seed": 218, "prompt": "a red fox", "negative_prompt": "blurry", "batch_size": 1}
    assert "scorers" not in house  # laion excluded from it leaves none: every scorer scores it (said below)
    assert data["guide"]["diffuser"] == [
        {"strategy": "group", "groups": {"early": ["IN00", "IN0[1-3]"], "mid": ["M00"]}, "params": ["alpha"]},
        {"strategy": "select", "patterns": ["OUT0*"], "params": ["alpha"]}]
    assert data["guide"]["clip_l"] == [{"strategy": "single", "params": ["alpha"]}]
    assert data["guide"]["bounds"] == {"alpha": {"low": 0.1, "high": 0.9}, "diffuser.OUT05.alpha": {"choices": [0.2, 0.4]},
                                       "early_alpha": {"low": 0.2, "high": 0.6, "step": 0.1}}
    for said in ("scorer_method: luminaflex", "scorer_filters (payload house)", "optimizer.bayes_config", "dependencies", "payload house: clip_skip",
                 "payload fox: vpred_enabled", "url:", "webui:", "configs_dir:"):
        assert said in printed, said
    assert "hr_scale" not in printed and "n_iter" not in printed  # hires fix off, one batch: nothing lost
    assert not (tmp_path / "new" / "other.yaml").exists()


def test_what_it_writes_validates_and_runs(tmp_path, tiny_sd1_paths, tiny_sd1_config_dir, capsys):
    """An older, flat layout with a layer_adjust guide (the old guide's layer_adjustments)."""
    a = tiny_sd1_paths[0]
    old = write(tmp_path / "old.yaml", f"""\
        model_paths: [{a}]
        optimization_mode: layer_adjust
        merge_method: weighted_sum
        optimizer: {{optuna: True, init_points: 1, n_iters: 1, random_state: 0,
                    optuna_config: {{sampler: {{type: random}}}}}}
        scorer_method: [background_blackness]
        batch_size: 1
        """)
    guide = write(tmp_path / "guide.yaml", """\
        components:
          - name: layer_adjustments
            strategy: none
            parameters: {detail1: [-2, 3], brightness: [-1, 1]}
        """)
    payloads = tmp_path / "payloads"
    write(payloads / "p.yaml", "p:\n  prompt: a red fox\n  steps: 2\n  width: 64\n  height: 64\n  sampler_name: Euler\n")
    out = tmp_path / "run.yaml"
    assert main(["import-config", str(old), "--guide", str(guide), "--payloads", str(payloads), "--out", str(out),
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"field": "scorer_method: background_blackness", "why": "no such scorer here (scorers lists those there "
                                                                    "are)"} in result["not_carried_over"]
    data = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert data["merge"] == {"method": "layer_adjust"} and len(data["models"]) == 1
    assert data["guide"]["bounds"] == {"detail_in": {"low": -2.0, "high": 3.0}, "brightness": {"low": -1.0, "high": 1.0}}
    data.update(diffusers_config=str(tiny_sd1_config_dir), output_dir=str(tmp_path / "runs"))
    out.write_text(yaml.safe_dump(data), encoding="utf-8")
    config = load_config(out)
    assert config.optimizer.sampler == "random" and config.optimizer.trials == 2
    assert main(["run", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["completed"] == 2


def test_an_existing_out_file_is_never_overwritten_and_bad_input_names_its_field(tmp_path, capsys):
    old = write(tmp_path / "old.yaml", "model_paths: [a.safetensors, b.safetensors]\n")
    out = write(tmp_path / "run.yaml", "keep me\n")
    assert main(["import-config", str(old), "--out", str(out)]) != 0
    assert out.read_text(encoding="utf-8") == "keep me\n"
    assert main(["import-config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "x.yaml")]) == 2
    assert "old_config" in capsys.readouterr().err and not (tmp_path / "x.yaml").exists()
