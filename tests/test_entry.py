"""The extension entry (scripts/sd_optim_tab.py) loaded the way A1111 1.10 loads an extension's
scripts, in the fake WebUI: the tab, the settings section, the API routes, the unload hook, the
kept-merge infotext, and the one-live-run rule. Runs under gradio 3.41 (make test-a1111) and 4.40."""

import sys
import time
from pathlib import Path

import gradio as gr
import pytest
import safetensors.torch
import torch
from fakes.a1111 import installed
from test_host_a1111 import assert_original
from test_runner import make_config

from sd_optim.hosts import webui_family
from sd_optim.hosts.a1111 import checkpoint_key

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def webui(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path):
    with installed(tiny_sd1_paths, tiny_sd1_config_dir) as fake:
        from modules import script_callbacks, scripts

        script_callbacks.clear_callbacks()
        # each test installs a fresh fake WebUI: the entry module must bind to its modules
        sys.modules.pop("sd_optim.ui.entry", None)
        scripts.load_scripts(str(ROOT))
        from sd_optim.ui import entry

        script_callbacks.ui_settings_callback()
        fake.shared.opts.sd_optim_output_dir = str(tmp_path / "outputs")
        fake.entry, fake.scripts, fake.callbacks = entry, scripts, script_callbacks
        yield fake
        if entry._manager is not None:
            entry._manager.shutdown()
        entry._manager = None
        script_callbacks.clear_callbacks()


def config_dict(paths, config_dir, **overrides):
    cfg = make_config(paths, config_dir, "unused", **{"optimizer": {"trials": 2, "seed": 0}, **overrides})
    data = cfg.to_dict()
    data.pop("output_dir")  # the WebUI setting decides
    return data


def wait_done(manager, timeout=120):
    deadline = time.time() + timeout
    while manager.live and time.time() < deadline:
        time.sleep(0.05)
    return manager.status()


def test_scripts_file_registers_tab_settings_and_script(webui):
    assert not webui.scripts.load_errors, webui.scripts.load_errors
    assert [c.__name__ for c, *_ in webui.scripts.scripts_data] == ["KeptMergeInfotext"]
    assert webui_family() == "a1111"
    labels = webui.shared.opts.data_labels
    for key in ("sd_optim_output_dir", "sd_optim_models_dir", "sd_optim_cache_budget_gb", "sd_optim_storage"):
        assert labels[key].section == ("sd_optim", "Optimize Merge"), key
    from modules import ui_settings

    with gr.Blocks():  # the Settings page builds each setting's component from its OptionInfo
        for key in ("sd_optim_output_dir", "sd_optim_models_dir", "sd_optim_cache_budget_gb", "sd_optim_storage"):
            ui_settings.create_setting_component(key)
    tabs = webui.callbacks.ui_tabs_callback()
    assert [(type(t).__name__, title, tab_id) for t, title, tab_id in tabs] == [
        ("Blocks", "Optimize Merge", "sd_optim")]
    assert isinstance(tabs[0][0], gr.Blocks)
    assert len(webui.callbacks.callbacks["app_started"]) == 1
    assert len(webui.callbacks.callbacks["script_unloaded"]) == 1


def test_run_from_the_tab_logic_refuses_a_second_and_restores(webui, tiny_sd1_paths, tiny_sd1_config_dir,
                                                              tmp_path):
    data = config_dict(tiny_sd1_paths, tiny_sd1_config_dir, optimizer={"trials": 3, "seed": 0, "study": "tab"})
    webui.renderer.step_hook = lambda step: time.sleep(0.05)  # long enough to be seen live
    first = webui.entry.start_run(data)
    assert first["state"] == "running" and first["study"] == "tab"
    second = webui.entry.start_run(data)
    assert second["state"] == "refused" and "already live" in second["text"] and "'tab'" in second["text"]
    status = wait_done(webui.entry.manager())
    assert status["state"] == "finished" and status["trials_done"] == 3, status
    assert webui.entry.manager().current.runner.engine._cache == {}  # the inputs' memory is released
    assert Path(status["run_dir"]).parent == tmp_path / "outputs"  # the setting's folder
    assert_original(webui, tiny_sd1_paths[0])
    bad = webui.entry.start_run({**data, "optimizer": {"trials": 0}})
    assert bad["state"] == "refused" and "optimizer.trials" in bad["text"]


def test_api_routes(webui, tiny_sd1_paths, tiny_sd1_config_dir, tmp_path):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    app = FastAPI()
    webui.callbacks.app_started_callback(None, app)
    client = TestClient(app)
    # the config file and the diffusers config live outside the WebUI's folders: the setting allows them
    webui.shared.opts.sd_optim_api_dirs = f"{tmp_path};{tiny_sd1_config_dir}"
    assert client.get("/sd-optim/status").json()["state"] == "idle"
    r = client.post("/sd-optim/run", json={"config": {"models": []}})
    assert r.status_code == 400 and r.json()["problems"]
    r = client.post("/sd-optim/run", json={"trials": 2})
    assert r.status_code == 400 and "'config'" in r.json()["error"]
    config_file = tmp_path / "run.yaml"
    import yaml

    config_file.write_text(yaml.safe_dump(config_dict(tiny_sd1_paths, tiny_sd1_config_dir,
                                                      optimizer={"trials": 50, "seed": 0, "study": "api"})))
    webui.renderer.step_hook = lambda step: time.sleep(0.05)
    r = client.post("/sd-optim/run", json={"config": str(config_file), "trials": 40})
    assert r.status_code == 200 and r.json()["state"] == "running", r.json()
    busy = client.post("/sd-optim/run", json={"config": str(config_file)})
    assert busy.status_code == 409 and busy.json()["status"]["study"] == "api"
    assert client.post("/sd-optim/pause").json()["paused"] is True
    assert client.post("/sd-optim/resume").json()["paused"] is False
    stopped = client.post("/sd-optim/stop").json()
    assert stopped["study"] == "api"
    status = wait_done(webui.entry.manager())
    assert status["state"] == "finished" and status["reason"] == "stopped through the API"
    assert status["trials_done"] < 40
    assert client.get("/sd-optim/status").json()["reason"] == "stopped through the API"
    assert_original(webui, tiny_sd1_paths[0])


def test_unloading_the_extension_stops_the_run_and_restores(webui, tiny_sd1_paths, tiny_sd1_config_dir):
    webui.renderer.step_hook = lambda step: time.sleep(0.05)
    data = config_dict(tiny_sd1_paths, tiny_sd1_config_dir, optimizer={"trials": 50, "seed": 0, "study": "u"})
    assert webui.entry.start_run(data)["state"] == "running"
    webui.callbacks.script_unloaded_callback()
    status = webui.entry.manager().status()
    assert status["state"] == "finished" and status["reason"] == "the extension was unloaded"
    assert_original(webui, tiny_sd1_paths[0])


def test_kept_merge_marks_later_images_until_a_reload(webui, tiny_sd1_paths, tiny_sd1_config_dir):
    data = config_dict(tiny_sd1_paths, tiny_sd1_config_dir, optimizer={"trials": 2, "seed": 0, "study": "k"},
                       after_run={"keep_best": True})
    webui.entry.start_run(data)
    status = wait_done(webui.entry.manager())
    assert status["kept_trial"] == status["best_trial"] is not None
    assert "stays loaded" in status["text"]
    script = webui.scripts.scripts_data[0][0]()

    def generate():
        p = webui.processing.StableDiffusionProcessingTxt2Img(prompt="a fox", seed=1, steps=2, width=64,
                                                              height=64, sampler_name="Euler")
        script.process(p)  # what the WebUI's AlwaysVisible scripts do before processing
        return webui.processing.process_images(p).infotexts[0]

    assert f"sd-optim merge: k trial {status['best_trial']}" in generate()
    original = safetensors.torch.load_file(str(tiny_sd1_paths[0]))
    key = "model.diffusion_model.out.2.weight"
    live = {checkpoint_key(n): v for n, v in webui.parameters().items()}
    assert not torch.equal(live[key], original[key])
    webui.sd_models.reload_model_weights(forced_reload=True)
    assert "sd-optim" not in generate()
    status = webui.entry.manager().status()
    assert not status["kept_loaded"] and "was kept loaded until the model was reloaded" in status["text"]


def test_tab_warns_when_the_webui_runs_without_its_queue(webui):
    def notices():
        tab = webui.callbacks.ui_tabs_callback()[0][0]
        return [c["props"].get("value") for c in tab.config["components"]
                if c["props"].get("elem_id") == "sd_optim_notice"]

    assert notices() == []
    webui.shared.cmd_opts.no_gradio_queue = True
    try:
        assert "--no-gradio-queue" in notices()[0]
    finally:
        del webui.shared.cmd_opts.no_gradio_queue
