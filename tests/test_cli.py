"""``python -m sd_optim``: run, resume, fork, studies, export and demo, as a user drives them."""

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import safetensors
import safetensors.torch
import sd_mecha
import torch
import yaml

from sd_optim.cli import main
from sd_optim.tiny_models import TINY_SIZE

ROOT = Path(__file__).resolve().parents[1]
RESULT_KEYS = {"study", "trials", "best_trial", "best_value", "best_params", "best_recipe", "run_dir"}


def write_project(folder: Path, paths, config_dir: Path, **overrides) -> Path:
    """A config folder as a user lays it out: run.yaml next to models/, every path relative."""
    (folder / "models").mkdir(parents=True, exist_ok=True)
    for p in paths[:2]:
        (folder / "models" / p.name).symlink_to(p)
    (folder / "diffusers-config").symlink_to(config_dir, target_is_directory=True)
    data = {
        "models": [{"path": f"models/{paths[0].name}", "name": "a"},
                   {"path": f"models/{paths[1].name}", "name": "b"}],
        "diffusers_config": "diffusers-config",
        "device": "cpu",
        "merge": {"method": "weighted_sum"},
        "guide": {"diffuser": ["single"], "clip_l": ["single"]},
        "payloads": [{"name": "p", "prompt": "a red fox", "seed": 3, "steps": 2, "cfg_scale": 5,
                      "sampler": "Euler", "width": TINY_SIZE, "height": TINY_SIZE}],
        "scorers": ["image_stats"],
        "optimizer": {"sampler": "random", "trials": 3, "seed": 0, "study": "s"},
        "output_dir": "out",
        **overrides,
    }
    config = folder / "run.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return config


def cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def trial_numbers(run_dir: Path, study: str) -> list[int]:
    s = optuna.load_study(study_name=study, storage=f"sqlite:///{run_dir / 'study.db'}")
    return [t.number for t in s.trials]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """``python -m sd_optim demo`` as a user starts it, in the background: on the small CPU
    machines it takes as long as the rest of this file, and the in-process tests use one core."""
    folder = tmp_path_factory.mktemp("demo")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    with open(folder / "stdout", "w") as out, open(folder / "stderr", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "sd_optim", "demo", "--trials", "8", "--json",
                                 "--out", str(folder / "demo")], cwd=ROOT, env=env, stdout=out, stderr=err)
    yield SimpleNamespace(proc=proc, folder=folder)
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_sd1_paths, tiny_sd1_config_dir, demo_run):
    """One ``run CONFIG --trials 2 --json`` whose study the read-only tests below inspect
    (``demo_run`` only so that the demo starts first and runs alongside)."""
    folder = tmp_path_factory.mktemp("cli") / "project"
    config = write_project(folder, tiny_sd1_paths, tiny_sd1_config_dir)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path_factory.mktemp("elsewhere"))  # only the config's folder can resolve them
        code, stdout, stderr = cli("run", config, "--trials", 2, "--json")
    assert code == 0, stderr
    return SimpleNamespace(folder=folder, config=config, out=folder / "out", result=last_json(stdout))


def test_run_prints_the_result_as_json_and_writes_the_run_folder(project):
    r = project.result
    assert RESULT_KEYS <= set(r)
    assert r["study"] == "s" and r["trials"] == 2 and r["reason"] == "completed"
    # output_dir: out and the models resolved against the config's folder, not the cwd
    assert Path(r["run_dir"]) == project.out / "s"
    assert trial_numbers(project.out / "s", "s") == [0, 1]
    rows = [json.loads(line) for line in (project.out / "s" / "trials.jsonl").read_text().splitlines()]
    best_row = max(rows, key=lambda row: row["value"])
    assert r["best_trial"] == best_row["number"] and r["best_value"] == best_row["value"]
    assert r["best_params"] == best_row["params"]
    assert set(r["best_params"]) == {"diffuser.all.alpha", "clip_l.all.alpha"}
    best = Path(r["best_recipe"])
    assert best == project.out / "s" / "best.mecha" and best.is_file()
    assert sd_mecha.deserialize_path(best) is not None
    text = best.read_text()
    assert all(str(p.resolve()) in text for p in (project.folder / "models").iterdir())


def test_resume_continues_the_study_and_fork_starts_a_new_one(project, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(project.folder, folder, symlinks=True)
    config = folder / "run.yaml"

    code, stdout, stderr = cli("run", config, "--resume", "s", "--trials", 1, "--json")
    assert code == 0, stderr
    resumed = last_json(stdout)
    assert resumed["study"] == "s" and resumed["trials"] == 1
    assert trial_numbers(folder / "out" / "s", "s") == [0, 1, 2]

    code, stdout, stderr = cli("run", config, "--fork", "s", "--study", "s2", "--trials", 1, "--json")
    assert code == 0, stderr
    forked = last_json(stdout)
    assert forked["study"] == "s2" and Path(forked["run_dir"]) == folder / "out" / "s2"
    parent = optuna.load_study(study_name="s", storage=f"sqlite:///{folder / 'out' / 's' / 'study.db'}")
    child = optuna.load_study(study_name="s2", storage=f"sqlite:///{folder / 'out' / 's2' / 'study.db'}")
    done = child.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    waiting = child.get_trials(states=(optuna.trial.TrialState.WAITING,))
    # seeded with the parent's parameter sets in order: the first ran now, the others wait their turn
    assert [t.params for t in done] == [parent.trials[0].params]
    distinct = {json.dumps(t.params, sort_keys=True) for t in parent.trials}
    assert len(waiting) == len(distinct) - 1
    assert len(parent.trials) == 3  # the parent is left as it was


def test_resume_tries_new_parameter_sets(project, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(project.folder, folder, symlinks=True)
    code, _, stderr = cli("run", folder / "run.yaml", "--resume", "s", "--trials", 2)
    assert code == 0, stderr
    s = optuna.load_study(study_name="s", storage=f"sqlite:///{folder / 'out' / 's' / 'study.db'}")
    first, resumed = s.trials[:2], s.trials[2:]
    assert len(resumed) == 2
    assert not [t.params for t in resumed if t.params in [f.params for f in first]]


def test_fork_into_the_config_study_name_says_how_to_name_the_new_one(project, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(project.folder, folder, symlinks=True)
    code, _, stderr = cli("run", folder / "run.yaml", "--fork", "s", "--trials", 1)
    assert code == 2 and "--study" in stderr
    code, _, stderr = cli("run", folder / "run.yaml", "--resume", "s", "--study", "t", "--trials", 1)
    assert code == 2 and "--study" in stderr
    assert trial_numbers(folder / "out" / "s", "s") == [0, 1]


def test_bad_config_exits_2_naming_the_field_and_value_and_creates_nothing(tmp_path, tiny_sd1_paths,
                                                                           tiny_sd1_config_dir, capsys):
    config = write_project(tmp_path, tiny_sd1_paths, tiny_sd1_config_dir, payloads=[
        {"name": "p", "prompt": "a red fox", "steps": 0, "width": TINY_SIZE, "height": TINY_SIZE}])
    code = main(["run", str(config), "--trials", "2"])
    captured = capsys.readouterr()
    assert code == 2
    assert "payloads[0].steps" in captured.err and "got 0" in captured.err
    assert "Traceback" not in captured.err
    assert main(["run", str(config), "--json"]) == 2  # --json: the error is the last stdout line too
    assert "payloads[0].steps" in last_json(capsys.readouterr().out)["error"]
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(config), "--trials", "0"])
    assert exit_info.value.code == 2 and "--trials" in capsys.readouterr().err


def test_missing_config_file_exits_2(tmp_path, capsys):
    code = main(["run", str(tmp_path / "nope.yaml")])
    assert code == 2 and "nope.yaml" in capsys.readouterr().err


def test_studies_lists_each_study_with_its_trials_and_best(project, capsys):
    assert main(["studies", "--dir", str(project.out), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["studies"]
    assert [(r["study"], r["trials"], r["best_trial"], r["best_value"]) for r in rows] == [
        ("s", 2, project.result["best_trial"], project.result["best_value"])]

    assert main(["studies", "--config", str(project.config)]) == 0  # output_dir taken from the config
    plain = capsys.readouterr().out
    assert plain.startswith("s: 2 trials, best ")
    assert f"{project.result['best_value']:.6f} (trial {project.result['best_trial']})" in plain

    assert main(["studies", "--dir", str(project.folder / "empty")]) == 0
    assert "no studies" in capsys.readouterr().out


def test_export_mecha_reproduces_the_run_folder_recipes(project, tmp_path, capsys):
    run_dir = project.out / "s"
    out = tmp_path / "x.mecha"
    assert main(["export", "s", "--dir", str(project.out), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    assert sd_mecha.deserialize_path(out) is not None
    assert out.read_text() == (run_dir / "best.mecha").read_text()

    # trial 0 is the first completed trial, so the run folder kept its recipe
    first = tmp_path / "t0.mecha"
    assert main(["export", "s", "--config", str(project.config), "--trial", "0", "--out", str(first)]) == 0
    assert first.read_text() == (run_dir / "recipes" / "trial-00000.mecha").read_text()
    other = 1 - project.result["best_trial"]
    second = tmp_path / "other.mecha"
    assert main(["export", "s", "--dir", str(project.out), "--trial", str(other), "--out", str(second)]) == 0
    assert second.read_text() != out.read_text()


def test_export_refuses_unknown_trials_and_studies(project, tmp_path, capsys):
    out = tmp_path / "x.mecha"
    assert main(["export", "s", "--dir", str(project.out), "--trial", "7", "--out", str(out)]) == 2
    assert "--trial" in capsys.readouterr().err and not out.exists()
    assert main(["export", "nope", "--dir", str(project.out), "--out", str(out)]) == 2
    assert "nope" in capsys.readouterr().err and not out.exists()
    assert main(["export", "s", "--dir", str(project.out), "--out", str(tmp_path / "x.ckpt")]) == 2
    assert ".safetensors" in capsys.readouterr().err


def test_a_study_without_completed_trials_is_listed_and_export_says_why_not(project, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "failed").mkdir(parents=True)
    shutil.copy(project.out / "s" / "config.yaml", out / "failed" / "config.yaml")
    study = optuna.create_study(study_name="failed", storage=f"sqlite:///{out / 'failed' / 'study.db'}",
                                direction="maximize")
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
    assert main(["studies", "--dir", str(out)]) == 0
    assert capsys.readouterr().out.strip() == "failed: 1 trials, best -"
    target = tmp_path / "x.mecha"
    assert main(["export", "failed", "--dir", str(out), "--out", str(target)]) == 2
    assert "no completed trial" in capsys.readouterr().err and not target.exists()


def test_export_safetensors_holds_the_recipe_and_the_merged_weights(project, tmp_path, capsys):
    out = tmp_path / "y.safetensors"
    assert main(["export", "s", "--dir", str(project.out), "--out", str(out)]) == 0
    capsys.readouterr()
    best = sd_mecha.deserialize_path(project.out / "s" / "best.mecha")
    with safetensors.safe_open(str(out), "pt") as f:
        metadata = f.metadata()
    written = safetensors.torch.load_file(str(out))
    expected = sd_mecha.merge(best, output_dtype=torch.float16)
    # the recipe as sd-mecha records it when merging best.mecha (merge spaces resolved)
    assert expected.pop("__metadata__") == metadata
    assert sd_mecha.deserialize(metadata["mecha_recipe"].split("\n")) is not None
    assert all(repr(v) in metadata["mecha_recipe"] for v in project.result["best_params"].values())
    assert set(written) == set(expected)
    for key, value in expected.items():
        assert torch.equal(written[key], value), key
    assert written[next(iter(written))].dtype == torch.float16

    # never overwritten: a second export refuses and leaves the file as it was
    before = out.read_bytes()
    assert main(["export", "s", "--dir", str(project.out), "--trial", "0", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert out.read_bytes() == before


def test_demo_runs_end_to_end_as_a_subprocess(demo_run):
    code = demo_run.proc.wait(timeout=600)
    stderr = (demo_run.folder / "stderr").read_text()
    assert code == 0, stderr[-3000:]
    result = last_json((demo_run.folder / "stdout").read_text())
    assert RESULT_KEYS <= set(result)
    assert result["trials"] == 8 and result["best_trial"] in range(8)
    assert set(result["best_params"]) == set(result["hidden_params"])
    assert Path(result["run_dir"]) == demo_run.folder / "demo" / "runs" / result["study"]
    assert sd_mecha.deserialize_path(Path(result["best_recipe"])) is not None
    assert trial_numbers(Path(result["run_dir"]), result["study"]) == list(range(8))


def test_worker_runs_its_share_of_a_shared_study_and_needs_a_database(tmp_path, tiny_sd1_paths, tiny_sd1_config_dir):
    config = write_project(tmp_path / "w", tiny_sd1_paths, tiny_sd1_config_dir)
    code, stdout, stderr = cli("worker", config, "--json")
    assert code == 2 and "optimizer.storage" in stderr and "database URL" in stderr
    assert not (tmp_path / "w" / "out").exists()
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    code, stdout, stderr = cli("worker", config, "--storage", storage, "--study", "team", "--trials", 2, "--json")
    assert code == 0, stderr
    first = last_json(stdout)
    assert first["study"] == "team" and first["trials"] == 2 and first["reason"] == "completed"
    code, stdout, stderr = cli("worker", config, "--storage", storage, "--study", "team", "--json")
    assert code == 0, stderr
    assert last_json(stdout)["trials"] == 1  # the study's limit is optimizer.trials: 3 in all
    assert len(optuna.load_study(study_name="team", storage=storage).trials) == 3
