"""Nothing lost, nobody let in: the API routes take the WebUI's authentication and only name files
in allowed folders; names cannot escape their folders; a new study never writes into another
run's folder; YAML cannot expand without bound; a scorer's pickle never runs code.

The API tests mount the routes the way the fake A1111 1.10 WebUI does (``on_app_started``) on a
plain FastAPI app (``--api-auth``) or on the app gradio builds (``--gradio-auth`` with its real
``/login``); they run under gradio 3.41 / fastapi 0.94 and gradio 4.40 / fastapi 0.112."""

import base64
import os
import pickle
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from fakes.a1111 import installed
from test_runner import make_config, run

from sd_optim.errors import ConfigError
from sd_optim.files.paths import name_problem
from sd_optim.run.runner import Runner, run_to_end

ROOT = Path(__file__).resolve().parents[1]
BOMB = "\n".join(["a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol,lol]"]
                 + [f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 10)}]" for i in range(8)])


@pytest.fixture
def webui(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path):
    with installed(tiny_sd1_paths, tiny_sd1_config_dir) as fake:
        from modules import script_callbacks, scripts

        script_callbacks.clear_callbacks()
        sys.modules.pop("sd_optim.ui.entry", None)
        scripts.load_scripts(str(ROOT))
        from sd_optim.ui import entry

        script_callbacks.ui_settings_callback()
        fake.shared.opts.sd_optim_output_dir = str(tmp_path / "outputs")
        fake.entry, fake.callbacks = entry, script_callbacks
        yield fake
        if entry._manager is not None:
            entry._manager.shutdown()
        entry._manager = None
        script_callbacks.clear_callbacks()


def api_config(paths, config_dir, **overrides):
    data = make_config(paths, config_dir, "unused", **{"optimizer": {"trials": 1, "seed": 0}, **overrides}).to_dict()
    if "output_dir" not in overrides:
        data.pop("output_dir")  # the setting's folder
    data.pop("diffusers_config")  # the WebUI's own model: no diffusers config
    return data


def plain_app(webui):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    app = FastAPI()
    webui.callbacks.app_started_callback(None, app)
    return TestClient(app)


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def wait_done(manager, timeout=120):
    deadline = time.time() + timeout
    while manager.live and time.time() < deadline:
        time.sleep(0.05)
    return manager.status()


# --- 1. authentication ------------------------------------------------------------------------

def test_api_auth_credentials_guard_every_route(webui, tiny_sd1_paths, tiny_sd1_config_dir, tmp_path):
    webui.shared.cmd_opts.api_auth = "alice:s3cret,bob:pa:ss"
    client = plain_app(webui)
    data = api_config(tiny_sd1_paths, tiny_sd1_config_dir, optimizer={"trials": 1, "seed": 0, "study": "authed"})
    for method, route in (("GET", "status"), ("POST", "run"), ("POST", "stop"), ("POST", "pause"),
                          ("POST", "resume")):
        r = client.request(method, f"/sd-optim/{route}", json={"config": data})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Basic", (route, r.text)
        r = client.request(method, f"/sd-optim/{route}", json={"config": data}, headers=basic("alice", "wrong"))
        assert r.status_code == 401, route
        r = client.request(method, f"/sd-optim/{route}", json={"config": data}, headers=basic("carol", "s3cret"))
        assert r.status_code == 401, route
    assert webui.entry.manager().current is None  # no run was started by the refused requests
    assert not (tmp_path / "outputs").exists()
    assert client.get("/sd-optim/status", headers=basic("bob", "pa:ss")).status_code == 200
    r = client.post("/sd-optim/run", json={"config": {"models": []}}, headers=basic("alice", "s3cret"))
    assert r.status_code == 400 and r.json()["problems"]
    r = client.post("/sd-optim/run", json={"config": data}, headers=basic("alice", "s3cret"))
    assert r.status_code == 200 and r.json()["study"] == "authed", r.json()
    assert wait_done(webui.entry.manager())["state"] == "finished"


def test_gradio_auth_needs_a_logged_in_user(webui):
    import gradio as gr
    from fastapi.testclient import TestClient

    webui.shared.cmd_opts.gradio_auth = "carol:pw1"
    with gr.Blocks() as demo:
        gr.Markdown("x")
    demo.auth = [("carol", "pw1")]  # what launch(auth=...) records; the app's login reads it
    app = gr.routes.App.create_app(demo)
    webui.callbacks.app_started_callback(demo, app)
    client = TestClient(app)
    r = client.get("/sd-optim/status")
    assert r.status_code == 401 and "log in" in r.json()["detail"]
    assert client.post("/sd-optim/run", json={"config": {}}).status_code == 401
    assert client.get("/sd-optim/status", headers=basic("carol", "pw1")).status_code == 401  # no API auth set
    names = ([f"access-token-{app.cookie_id}", f"access-token-unsecure-{app.cookie_id}"]
             if hasattr(app, "cookie_id") else ["access-token", "access-token-unsecure"])
    client.cookies.set(names[1], "forged-token")
    assert client.get("/sd-optim/status").status_code == 401
    client.cookies.clear()
    assert client.post("/login", data={"username": "carol", "password": "nope"}).status_code == 400
    assert client.get("/sd-optim/status").status_code == 401
    r = client.post("/login", data={"username": "carol", "password": "pw1"})
    assert r.status_code == 200 and "carol" in app.tokens.values()
    r = client.get("/sd-optim/status")
    assert r.status_code == 200 and r.json()["state"] == "idle"


def test_no_auth_configured_leaves_the_routes_open_as_the_webui_api(webui):
    assert plain_app(webui).get("/sd-optim/status").status_code == 200


# --- 1. what a request may name ----------------------------------------------------------------

def test_api_config_may_only_name_allowed_folders(webui, tiny_sd1_paths, tiny_sd1_config_dir, tmp_path):
    client = plain_app(webui)
    secret = tmp_path / "private" / "secret.json"
    secret.parent.mkdir()
    secret.write_text('{"models": "TOPSECRET-CONTENTS"}')
    r = client.post("/sd-optim/run", json={"config": str(secret)})
    assert r.status_code == 400 and "config: outside the folders" in r.text and "TOPSECRET" not in r.text
    elsewhere = tmp_path / "elsewhere"
    data = api_config(tiny_sd1_paths, tiny_sd1_config_dir,
                      loras=[str(tmp_path / "private" / "l.safetensors")],
                      output_dir=str(elsewhere / "runs"), wildcards_dir=str(tmp_path / "outputs" / ".." / "x"),
                      optimizer={"trials": 1, "storage": f"sqlite:///{elsewhere}/s.db"},
                      scorers=[{"name": "image_stats"},
                               {"name": "laion_aesthetic", "options": {"head": "/etc/h.pth"}}])
    r = client.post("/sd-optim/run", json={"config": data})
    problems = r.json()["problems"]
    assert r.status_code == 400
    fields = [p["field"] for p in problems]
    assert fields == ["loras[0].path", "wildcards_dir", "output_dir", "scorers[1].options.head",
                      "optimizer.storage"], problems
    assert problems[1]["message"] == "must not contain '..'"
    assert problems[1]["text"].startswith("wildcards_dir: must not contain '..', got ")
    assert not elsewhere.exists()
    r = client.post("/sd-optim/run", json={"config": {**data, "optimizer": {"storage": "postgresql://h/db"}}})
    assert any("accepts only SQLite" in p["message"] for p in r.json()["problems"])
    # a sampler by import path runs its module's code on import: from the API, optuna's only
    r = client.post("/sd-optim/run", json={"config": {**data, "optimizer": {"sampler": "antigravity.Sampler"}}})
    assert r.status_code == 400 and "antigravity" not in sys.modules
    assert next(p for p in r.json()["problems"] if p["field"] == "optimizer.sampler")["message"].startswith(
        "the API imports samplers from optuna only")
    # the setting lists more folders; the WebUI's models and outputs folders are allowed already
    webui.shared.opts.sd_optim_api_dirs = f"{tmp_path / 'private'};{elsewhere}"
    config_file = Path(webui.shared.models_path) / "run.yaml"
    config_file.write_text(yaml.safe_dump(api_config(tiny_sd1_paths, tiny_sd1_config_dir,
                                                     output_dir=str(elsewhere / "runs"),
                                                     optimizer={"trials": 1, "seed": 0, "study": "ok"})))
    r = client.post("/sd-optim/run", json={"config": str(config_file)})
    assert r.status_code == 200, r.json()
    assert wait_done(webui.entry.manager())["state"] == "finished"
    assert (elsewhere / "runs" / "ok" / "study.db").exists()


def test_the_tab_is_not_restricted_to_the_api_folders(webui, tiny_sd1_paths, tiny_sd1_config_dir, tmp_path):
    data = api_config(tiny_sd1_paths, tiny_sd1_config_dir, output_dir=str(tmp_path / "mine"),
                      optimizer={"trials": 1, "seed": 0, "study": "tab"})
    assert webui.entry.start_run(data)["state"] == "running"
    assert wait_done(webui.entry.manager())["state"] == "finished"
    assert (tmp_path / "mine" / "tab" / "config.yaml").exists()


def test_yaml_bomb_and_non_configs_are_refused_briefly(webui, tmp_path):
    client = plain_app(webui)
    assert len(BOMB) < 400
    r = client.post("/sd-optim/run", json={"config": BOMB})
    assert r.status_code == 400 and len(r.content) < 1000 and "aliases" in r.text, r.text[:300]
    text_file = Path(webui.shared.models_path) / "notes.yaml"
    text_file.write_text("root:x:0:0:PRIVATE-LINE of a file that is no config\n")
    r = client.post("/sd-optim/run", json={"config": str(text_file)})
    assert r.status_code == 400 and "must be a mapping" in r.text and "PRIVATE" not in r.text
    text_file.write_text("models: [a\n  PRIVATE: {\n")
    r = client.post("/sd-optim/run", json={"config": str(text_file)})
    assert r.status_code == 400 and "not valid YAML" in r.text and "PRIVATE" not in r.text, r.text


@pytest.mark.parametrize("text", [
    "&a [*a]",  # refers to itself
    "[" * 5000 + "]" * 5000,  # nests past the parser's recursion
])
def test_safe_yaml_refuses_unbounded_documents(text):
    from sd_optim.config import safe_yaml

    with pytest.raises(ConfigError) as e:
        safe_yaml.load(text, "config")
    assert len(str(e.value)) < 300


def test_safe_yaml_keeps_ordinary_anchors():
    from sd_optim.config import safe_yaml

    data = safe_yaml.load("base: &b {steps: 2, seed: 3}\npayloads:\n- {<<: *b, name: x}\n- {<<: *b, name: y}\n")
    assert data["payloads"][1] == {"steps": 2, "seed": 3, "name": "y"}


# --- 2. names and writes stay in their folders ------------------------------------------------

@pytest.mark.parametrize("bad", ["", ".", "..", "../x", "a/b", "a\\b", "/abs", "C:evil", ".hidden", "-rf",
                                 "CON", "nul.txt", "lpt1", "a\x00b", "tail.", "x" * 101, "a\nb"])
def test_unsafe_names_are_refused(bad):
    assert name_problem(bad)


@pytest.mark.parametrize("good", ["s", "my merge v2", "ties-0.5_a", "CONFIG", "x" * 100])
def test_ordinary_names_pass(good):
    assert name_problem(good) == ""


def test_study_names_cannot_leave_the_output_folder(sd1_host, tiny_sd1_paths, tiny_sd1_config_dir, tmp_path):
    out = tmp_path / "runs"
    (tmp_path / "config.yaml").write_text("mine: true\n")
    for name in ("..", ".", "../escape", "a/b"):
        config = make_config(tiny_sd1_paths, tiny_sd1_config_dir, out, optimizer={"study": name})
        with pytest.raises(ConfigError, match="optimizer.study"):
            run(config, sd1_host)
    config = make_config(tiny_sd1_paths, tiny_sd1_config_dir, out)
    for option in ("resume", "fork"):
        with pytest.raises(ConfigError, match=f"--{option}"):
            run(config, sd1_host, **{option: ".."})
    assert (tmp_path / "config.yaml").read_text() == "mine: true\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]  # nothing written anywhere


def test_config_names_that_become_files_are_checked(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path):
    with pytest.raises(ConfigError) as e:
        make_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path,
                    after_run={"save_best": True, "save_name": "../../evil"},
                    payloads=[{"name": "../../../p", "prompt": "a fox"}],
                    models=[{"path": str(tiny_sd1_paths[0]), "name": "a"},
                            {"path": str(tiny_sd1_paths[1]), "name": "/etc"}])
    fields = sorted(p.split(":")[0] for p in e.value.problems)
    assert fields == ["after_run.save_name", "models[1].name", "payloads[0].name"], e.value.problems


def test_run_folder_link_is_not_written_through(sd1_host, tiny_sd1_paths, tiny_sd1_config_dir, tmp_path):
    out, target = tmp_path / "runs", tmp_path / "target"
    out.mkdir()
    target.mkdir()
    (out / "s").symlink_to(target)
    with pytest.raises(ConfigError, match="symbolic link"):
        run(make_config(tiny_sd1_paths, tiny_sd1_config_dir, out), sd1_host)
    assert list(target.iterdir()) == []


def test_checkpoint_name_box_cannot_escape(sd1_host, tiny_sd1_paths, tiny_sd1_config_dir, tmp_path):
    from sd_optim.run.trials import TrialTools

    runner = Runner(make_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path / "runs",
                                optimizer={"trials": 1}), sd1_host)
    run_to_end(runner)
    tools = TrialTools(runner)
    for name in (str(tmp_path / "abs"), "../../up", "../" * 8 + "tmp/x", "sub/x"):
        with pytest.raises(ConfigError, match="checkpoint name"):
            tools.save_checkpoint(0, name)
    assert not list(tmp_path.rglob("*.safetensors"))
    saved = tools.save_checkpoint(0, "keeper.safetensors")
    assert saved.name == "keeper.safetensors" and saved.parent == runner.state.folder.path  # the host's folder


def test_export_refuses_a_link_at_out(tmp_path):
    from sd_optim.run.exporting import export_trial

    link, target = tmp_path / "best.mecha", tmp_path / "elsewhere" / "created.mecha"
    link.symlink_to(target)  # dangling: writing would create the target
    with pytest.raises(ConfigError, match="symbolic link"):
        export_trial(tmp_path / "runs", "s", trial=None, out=link)
    assert not target.parent.exists()
    with pytest.raises(ConfigError, match="study"):
        export_trial(tmp_path / "runs", "..", trial=None, out=tmp_path / "x.mecha")


# --- 3. a new study gets a new folder ---------------------------------------------------------

def test_new_study_never_writes_into_another_runs_folder(sd1_host, tiny_sd1_paths, tiny_sd1_config_dir, tmp_path):
    out = tmp_path / "runs"
    old = out / "s"
    old.mkdir(parents=True)
    (old / "config.yaml").write_text("old: run\n")
    (old / "trials.jsonl").write_text('{"kind": "trial", "number": 0}\n')
    with pytest.raises(ConfigError, match="already holds another run's files"):
        run(make_config(tiny_sd1_paths, tiny_sd1_config_dir, out), sd1_host)  # optimizer.study: s
    assert (old / "config.yaml").read_text() == "old: run\n"
    assert (old / "trials.jsonl").read_text() == '{"kind": "trial", "number": 0}\n'
    assert sorted(p.name for p in old.iterdir()) == ["config.yaml", "trials.jsonl"]
    unnamed = make_config(tiny_sd1_paths, tiny_sd1_config_dir, out, optimizer={"study": "", "trials": 1})
    first = run(unnamed, sd1_host)
    second = run(unnamed, sd1_host)  # the same config again: a numbered study in its own folder
    assert Path(second.run_dir).name == Path(first.run_dir).name + "-2"
    assert second.study == Path(second.run_dir).name
    assert len((Path(first.run_dir) / "trials.jsonl").read_text().splitlines()) == 1


# --- 4. pickles -------------------------------------------------------------------------------

class _Payload:
    """Unpickling this creates ``marker``: what a malicious weights file would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_scorer_pickle_never_runs_code(tmp_path, monkeypatch):
    from scoring_fixtures import make_tiny_clip, make_tiny_head, register_tiny_clip_config, save_head

    from sd_optim.scoring import build_scorers
    from sd_optim.scoring.base import ScorerError

    # torch < 2.6 (A1111 1.10 ships 2.1.2) unpickles anything unless told weights_only=True;
    # this switch gives the same default on the torch installed here
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    arch = register_tiny_clip_config(tmp_path / "configs")
    head = save_head(make_tiny_head(16, seed=0), tmp_path / "head.pth")
    marker = tmp_path / "pwned"
    evil = tmp_path / "clip.bin"
    state = make_tiny_clip(seed=0).state_dict()
    torch.save({**state, "extra": _Payload(marker)}, evil)
    archive = tmp_path / "ViT-L-14.pt"  # looks like OpenAI's TorchScript archive, is a pickle
    torch.save({"x": _Payload(marker)}, archive)
    with zipfile.ZipFile(archive, "a") as z:
        z.writestr("archive/constants.pkl", pickle.dumps(()))
    for clip in (evil, archive):
        scorer, = build_scorers([_spec("laion_aesthetic", {"head": str(head), "clip": str(clip),
                                                            "clip_arch": arch})],
                                models_dir=None, device="cpu")
        with pytest.raises(ScorerError) as e:
            scorer.load()
        assert not marker.exists(), f"unpickling {clip.name} ran its code"
        assert str(clip) in str(e.value)
    good = tmp_path / "good.bin"
    torch.save(state, good)
    scorer, = build_scorers([_spec("laion_aesthetic", {"head": str(head), "clip": str(good), "clip_arch": arch})],
                            models_dir=None, device="cpu")
    scorer.load()  # a plain state dict still loads under the forced unsafe default
    assert not os.path.exists(marker)


def _spec(name, options):
    from sd_optim.config import ScorerSettings

    return ScorerSettings(name, 1.0, options)


@pytest.mark.parametrize("profile", ["forge", "reforge"])
def test_api_auth_in_the_other_webui_families(profile, tiny_sd1_paths, tiny_sd1_config_dir):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from test_entry_profiles import webui as family_webui

    with family_webui(profile, tiny_sd1_paths, tiny_sd1_config_dir) as (fake, _entry, _scripts, callbacks):
        fake.shared.cmd_opts.api_auth = "dana:pw"
        app = FastAPI()
        callbacks.app_started_callback(None, app)
        client = TestClient(app)
        assert client.get("/sd-optim/status").status_code == 401
        assert client.get("/sd-optim/status", headers=basic("dana", "pw")).status_code == 200
