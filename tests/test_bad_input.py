"""Bad input, as a user gives it to ``python -m sd_optim``: each is refused with exit code 2 and a
message naming the field and the value, before anything is written; and a run whose every
trial fails ends with exit code 1 and says why.

Runs that must get past loading the host reuse the session's tiny SD1 host (``reuse_host``):
loading it again for each refusal would only cost time; the files are still checked by the
real ``check_files``. Inputs that must be refused before the host loads go through the real
``make_host``.
"""

import json
import shutil
import struct
from pathlib import Path

import optuna
import pytest
import safetensors.torch
import test_runner  # noqa: F401  (registers sd_optim_test_fragile_sum, which refuses alpha > 0.6)
import torch
import yaml
from test_cli import cli, last_json, write_project
from test_merge_modes import VAE_LORA_KEYS, write_kohya_lora

import sd_optim.cli
from sd_optim.errors import ConfigError
from sd_optim.files.inputs import check_files, safetensors_header

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def reuse_host(monkeypatch, sd1_host):
    def make_host(config, device=None):
        check_files(config)
        return sd1_host

    monkeypatch.setattr(sd_optim.cli, "make_host", make_host)


def project(tmp_path, paths, config_dir, **overrides) -> Path:
    return write_project(tmp_path / "project", paths, config_dir, **overrides)


def refused(config: Path, *extra) -> str:
    """Runs CONFIG, expects exit code 2 with nothing written; returns the error text."""
    code, stdout, stderr = cli("run", config, "--json", *extra)
    assert code == 2, stderr
    assert "Traceback" not in stderr
    assert not (config.parent / "out").exists()  # no run folder, no study.db
    error = last_json(stdout)["error"]
    assert error in stderr
    return error


def truncated_copy(src: Path, folder: Path, cut: int = 1000) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / src.name
    data = src.read_bytes()
    dst.write_bytes(data[:-cut])
    return dst


# --- item 13: inputs refused with the field and the value -----------------------------------------

def test_sampler_option_of_the_wrong_type_is_refused_before_a_study_exists(
        tmp_path, tiny_sd1_paths, tiny_sd1_config_dir, reuse_host):
    config = project(tmp_path, tiny_sd1_paths, tiny_sd1_config_dir,
                     optimizer={"sampler": "tpe", "trials": 1, "study": "s",
                                "sampler_options": {"n_startup_trials": "x"}})
    error = refused(config)
    assert ("optimizer.sampler_options.n_startup_trials: must be an integer (TPESampler takes int), "
            "got 'x'") in error


def test_a_refusal_after_the_storage_is_opened_leaves_no_study_db(
        tmp_path, tiny_sd1_paths, tiny_sd1_config_dir, reuse_host):
    config = project(tmp_path, tiny_sd1_paths, tiny_sd1_config_dir)
    error = refused(config, "--fork", "nope", "--study", "new")  # the fork's parent is looked up last
    assert "--fork: no study named 'nope'" in error


@pytest.mark.parametrize("which", [0, 1], ids=["host model", "other model"])
def test_a_truncated_model_is_refused_naming_it(which, tmp_path, tiny_sd1_paths, tiny_sd1_config_dir):
    paths = list(tiny_sd1_paths[:2])
    paths[which] = truncated_copy(paths[which], tmp_path / "cut")
    config = project(tmp_path, paths, tiny_sd1_config_dir)
    error = refused(config)
    assert f"models[{which}].path: {paths[which].name} is truncated or damaged" in error
    assert "the file holds" in error and str(config.parent / "models" / paths[which].name) in error


def test_a_full_checkpoint_given_as_a_lora_is_refused(tmp_path, tiny_sd1_paths, tiny_sd1_config_dir):
    config = project(tmp_path, tiny_sd1_paths, tiny_sd1_config_dir,
                     loras=[{"path": str(tiny_sd1_paths[2]), "apply_to": "b"}])
    error = refused(config)
    assert (f"loras[0].path: {tiny_sd1_paths[2].name} is a full sd1-ldm checkpoint, not a LoRA "
            "(list it under models: to merge it)") in error
    assert repr(str(tiny_sd1_paths[2])) in error


def test_a_file_with_no_lora_keys_is_refused(tmp_path, tiny_sd1_paths, tiny_sd1_config_dir):
    lora = tmp_path / "odd.safetensors"
    safetensors.torch.save_file({"some.weight": torch.zeros(2, 2)}, str(lora))
    config = project(tmp_path, tiny_sd1_paths, tiny_sd1_config_dir, loras=[str(lora)])
    assert "loras[0].path: odd.safetensors is not a LoRA format sd-mecha reads" in refused(config)


def test_a_truncated_lora_is_refused(tmp_path, tiny_sd1_paths, tiny_sd1_config_dir):
    lora = tmp_path / "l.safetensors"
    write_kohya_lora(lora, tiny_sd1_paths[1], VAE_LORA_KEYS["sd1-ldm"])
    cut = truncated_copy(lora, tmp_path / "cut", cut=8)
    config = project(tmp_path, tiny_sd1_paths, tiny_sd1_config_dir, loras=[str(cut)])
    assert "loras[0].path: l.safetensors is truncated or damaged" in refused(config)


def test_a_lora_of_another_architecture_is_refused(tmp_path, tiny_sd1_paths, tiny_sd1_config_dir, reuse_host):
    lora = tmp_path / "xl.safetensors"  # SDXL kohya key names (its VAE layers have SD1's shapes)
    write_kohya_lora(lora, tiny_sd1_paths[1], VAE_LORA_KEYS["sdxl-sgm"])
    config = project(tmp_path, tiny_sd1_paths, tiny_sd1_config_dir, loras=[str(lora)])
    error = refused(config)
    assert "loras[0].path: xl.safetensors is a sdxl-" in error and "the loaded model is sd1-ldm" in error


class _Tripwire:
    """Unpickling it creates ``path``: proof that a file was unpickled."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_a_pickle_lora_is_refused_and_never_unpickled(tmp_path, tiny_sd1_paths, tiny_sd1_config_dir):
    marker = tmp_path / "unpickled"
    lora = tmp_path / "l.ckpt"
    torch.save({"lora_vae_quant_conv.alpha": _Tripwire(marker)}, str(lora))
    config = project(tmp_path, tiny_sd1_paths, tiny_sd1_config_dir, loras=[{"path": str(lora)}])
    error = refused(config)
    assert "loras[0].path: only .safetensors LoRAs are supported (.ckpt files are pickles" in error
    assert repr(str(lora)) in error
    assert not marker.exists()


def test_a_binary_config_file_is_refused(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_bytes(bytes(range(256)) * 4)
    code, _stdout, stderr = cli("run", config)
    assert code == 2 and "Traceback" not in stderr
    assert f"config file: not UTF-8 text (a YAML file is expected; byte 128 is b'\\x80'), got {str(config)!r}" in stderr
    assert sorted(tmp_path.iterdir()) == [config]


def test_a_binary_recipe_file_is_refused(tmp_path, tiny_sd1_paths, tiny_sd1_config_dir, reuse_host):
    recipe = tmp_path / "r.mecha"
    recipe.write_bytes(b"\xff\xfe\x00binary" * 50)
    config = project(tmp_path, tiny_sd1_paths, tiny_sd1_config_dir, mode="recipe",
                     recipe={"path": str(recipe)}, guide={"recipe": {"include": ["*"]}})
    assert f"recipe.path: not a .mecha recipe (not UTF-8 text), got {str(recipe)!r}" in refused(config)


@pytest.mark.parametrize("method, fixed, expected", [
    ("tensor_sum", {"offset": "abc"}, "merge.fixed.offset: must be a number (tensor_sum takes a float), got 'abc'"),
    ("weighted_sum", {"alpha": "abc"}, "merge.fixed.alpha: must be a number (weighted_sum takes a float), got 'abc'"),
    ("weighted_sum", {"offset": 0.1}, ("merge.fixed.offset: weighted_sum has no numeric hyperparameter 'offset' "
                                      "(it has: alpha)")),
])
def test_fixed_values_are_checked_against_the_method(method, fixed, expected, tmp_path, tiny_sd1_paths,
                                                      tiny_sd1_config_dir, reuse_host):
    config = project(tmp_path, tiny_sd1_paths, tiny_sd1_config_dir, merge={"method": method, "fixed": fixed})
    error = refused(config)
    assert expected in error
    assert "guide:" not in error  # the guide is fine: the value is what is wrong


def test_an_unknown_scorer_is_named_by_its_field(tmp_path, tiny_sd1_paths, tiny_sd1_config_dir, reuse_host):
    config = project(tmp_path, tiny_sd1_paths, tiny_sd1_config_dir,
                     scorers=["image_stats", {"name": "image_stat", "weight": 1}])
    error = refused(config)
    assert "scorers[1].name: unknown scorer (did you mean 'image_stats'?); available: " in error
    assert error.endswith("got 'image_stat'")


def test_a_missing_diffusers_config_is_named_as_such(tmp_path, tiny_sd1_paths, tiny_sd1_config_dir):
    config = project(tmp_path, tiny_sd1_paths, tiny_sd1_config_dir, diffusers_config="no-such-folder")
    error = refused(config)
    assert f"diffusers_config: no such folder, got {str(config.parent / 'no-such-folder')!r}" in error
    assert "host_model" not in error


def test_studies_and_export_refuse_dir_with_config(tmp_path):
    config = tmp_path / "run.yaml"
    for argv in (["studies"], ["export", "s", "--out", str(tmp_path / "x.mecha")]):
        code, _, stderr = cli(*argv, "--dir", tmp_path / "runs", "--config", config)
        assert code == 2
        assert f"--dir: cannot be combined with --config (which takes the output folder from {str(config)!r})" \
               in stderr and str(tmp_path / "runs") in stderr
    assert sorted(tmp_path.iterdir()) == []


def test_studies_with_a_missing_sqlite_file_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, stderr = cli("studies", "--storage", "sqlite:///new.db")
    assert code == 2
    assert "--storage: no such SQLite database file (new.db), got 'sqlite:///new.db'" in stderr
    assert not (tmp_path / "new.db").exists()
    # an existing database is read as before
    optuna.create_study(study_name="kept", storage="sqlite:///old.db")
    code, stdout, _ = cli("studies", "--storage", "sqlite:///old.db", "--json")
    assert code == 0 and [r["study"] for r in json.loads(stdout)["studies"]] == ["kept"]


@pytest.mark.parametrize("command", ["studies", "export"])
def test_an_unusable_storage_url_is_named(command, tmp_path):
    argv = ["export", "s", "--out", str(tmp_path / "x.mecha")] if command == "export" else ["studies"]
    code, _, stderr = cli(*argv, "--dir", tmp_path, "--storage", "foo://x")
    assert code == 2
    assert "--storage: cannot open 'foo://x': NoSuchModuleError" in stderr
    assert "no study named" not in stderr and sorted(tmp_path.iterdir()) == []


def test_export_to_an_unwritable_out_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = blocker / "x.mecha"  # a regular file in the path: even root cannot write there
    code, _, stderr = cli("export", "s", "--dir", tmp_path, "--out", out)
    assert code == 2
    assert f"--out: cannot write {str(out)!r}: {str(blocker)!r} is a file, not a folder" in stderr
    assert blocker.read_text() == "not a folder"


def test_a_run_whose_every_trial_fails_exits_1_and_says_why(tmp_path, tiny_sd1_paths, tiny_sd1_config_dir,
                                                           reuse_host):
    config = project(tmp_path, tiny_sd1_paths, tiny_sd1_config_dir,
                     merge={"method": "sd_optim_test_fragile_sum"},
                     guide={"diffuser": ["single"], "bounds": {"alpha": {"low": 0.7, "high": 0.9}}})
    code, stdout, stderr = cli("run", config, "--trials", 2, "--json")
    assert code == 1
    result = last_json(stdout)
    assert result["completed"] == 0 and result["trials"] == 2 and result["best_trial"] is None
    assert result["failure"].startswith("every trial failed (2 of 2); the last: ValueError: alpha too high")
    assert f"error: {result['failure']}" in stderr

    # a run with a completed trial is a success again: the study goes on, exit code 0
    shutil.rmtree(config.parent / "out")
    data = yaml.safe_load(config.read_text())
    data["guide"]["bounds"]["alpha"] = {"low": 0.1, "high": 0.5}
    config.write_text(yaml.safe_dump(data))
    code, stdout, stderr = cli("run", config, "--trials", 1, "--json")
    assert code == 0, stderr
    assert last_json(stdout)["completed"] == 1 and last_json(stdout)["failure"] == ""


# --- item 14: validation reads enough of each file -----------------------------------------------

def raw_safetensors(path: Path, header: dict, data: bytes) -> Path:
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


@pytest.mark.parametrize("header, data, expected", [
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, None),
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, ("is truncated or damaged: its "
                                                                              "header describes 8 bytes of tensor "
                                                                              "data, the file holds 4")),
    ({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, ("spans 8 bytes, its shape [3] "
                                                                              "of F32 needs 12")),
    ({"w": {"dtype": "F7", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, "has an unknown dtype 'F7'"),
    ({"w": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 8, ("is truncated or damaged: its "
                                                                               "header describes 4 bytes")),
    ({"w": {"dtype": "F16", "shape": "2", "data_offsets": [0, 4]}}, b"\0" * 4, "has a bad shape '2'"),
    ({"w": {"dtype": "F16", "shape": [2], "data_offsets": [4, 0]}}, b"\0" * 4, "has bad data offsets [4, 0]"),
])
def test_the_header_is_checked_against_the_data(header, data, expected, tmp_path):
    path = raw_safetensors(tmp_path / "m.safetensors", {"__metadata__": {"a": "b"}, **header}, data)
    if expected is None:
        assert list(safetensors_header(path)) == ["w"]
        return
    with pytest.raises(ValueError) as info:
        safetensors_header(path)
    assert expected in str(info.value) and "m.safetensors" in str(info.value)


def test_check_files_reads_every_header(tmp_path, tiny_sd1_paths, tiny_sd1_config_dir):
    from sd_optim.config import load_config

    cut = truncated_copy(tiny_sd1_paths[1], tmp_path / "cut", cut=1)
    config = load_config(project(tmp_path, [tiny_sd1_paths[0], cut], tiny_sd1_config_dir))
    with pytest.raises(ConfigError) as info:
        check_files(config)
    [problem] = info.value.problems
    assert problem.startswith(f"models[1].path: {cut.name} is truncated or damaged")
