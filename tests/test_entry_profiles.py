"""The extension entry in the other two WebUI families: scripts/sd_optim_tab.py loaded the way
Forge (fake of dfdcbab6) and reForge / Forge Classic (fakes of 3b56b268 / 1f95d717) load an
extension's scripts picks the right host, registers the tab and the settings, and a run started
through it merges, finishes and leaves every parameter as it was."""

import contextlib
import sys
import time
from pathlib import Path

import gradio as gr
import pytest
import torch

from sd_optim.hosts import webui_family

ROOT = Path(__file__).resolve().parents[1]
FAMILY = {"forge": "forge", "reforge": "ldm_patched", "classic": "ldm_patched"}
HOST = {"forge": "ForgeHost", "reforge": "LdmPatchedHost", "classic": "LdmPatchedHost"}


@contextlib.contextmanager
def webui(profile, paths, config_dir):
    if profile == "forge":
        from fakes.forge import installed

        ctx = installed(paths, config_dir)
    else:
        from fakes.ldm_patched import installed

        ctx = installed(paths, config_dir, profile=profile)
    with ctx as fake:
        path_before = list(sys.path)  # these WebUIs keep the extension root on sys.path for good
        from modules import script_callbacks, scripts

        script_callbacks.clear_callbacks()
        sys.modules.pop("sd_optim.ui.entry", None)  # bind the entry to this fake's modules
        scripts.scripts_data.clear()
        scripts.load_errors.clear()
        scripts.load_scripts(str(ROOT))
        from sd_optim.ui import entry

        try:
            yield fake, entry, scripts, script_callbacks
        finally:
            if entry._manager is not None:
                entry._manager.shutdown()
            entry._manager = None
            script_callbacks.clear_callbacks()
            sys.path[:] = path_before


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.uint8) if t.dtype.itemsize == 1 else t


@pytest.mark.parametrize("profile", ["forge", "reforge", "classic"])
def test_entry_registers_and_runs_in_each_family(profile, tiny_sd1_paths, tiny_sd1_config_dir, tmp_path):
    from test_runner import make_config

    with webui(profile, tiny_sd1_paths, tiny_sd1_config_dir) as (fake, entry, scripts, callbacks):
        assert not scripts.load_errors, scripts.load_errors
        assert [c.__name__ for c, *_ in scripts.scripts_data] == ["KeptMergeInfotext"]
        assert webui_family() == FAMILY[profile]
        callbacks.ui_settings_callback()
        assert fake.shared.opts.data_labels["sd_optim_output_dir"].section == ("sd_optim", "Optimize Merge")
        from modules import ui_settings

        with gr.Blocks():  # what the Settings page does with each option
            for key in [k for k in fake.shared.opts.data_labels if k.startswith("sd_optim_")]:
                ui_settings.create_setting_component(key)
        fake.shared.opts.sd_optim_output_dir = str(tmp_path / "outputs")
        tabs = callbacks.ui_tabs_callback()
        assert [(title, tab_id) for _, title, tab_id in tabs] == [("Optimize Merge", "sd_optim")]
        assert isinstance(tabs[0][0], gr.Blocks)
        before = {n: bits(v).clone() for n, v in fake.parameters().items()}
        config = make_config(tiny_sd1_paths, tiny_sd1_config_dir, "unused",
                             optimizer={"trials": 2, "seed": 0, "study": profile}).to_dict()
        config.pop("output_dir")
        status = entry.start_run(config)
        assert status["state"] == "running", status
        assert type(entry.manager().host).__name__ == HOST[profile]
        deadline = time.time() + 120
        while entry.manager().live and time.time() < deadline:
            time.sleep(0.05)
        status = entry.manager().status()
        assert status["state"] == "finished" and status["trials_done"] == 2, status
        assert Path(status["run_dir"]) == tmp_path / "outputs" / profile
        after = fake.parameters()
        assert set(after) == set(before)
        for name, value in before.items():
            assert torch.equal(bits(after[name]), value), name


def test_a_webui_joins_a_shared_study_a_cli_worker_started(sd1_host, tiny_sd1_paths, tiny_sd1_config_dir, tmp_path):
    """Forge (fake) joins, as a worker, the study a CLI worker created in a shared database; its
    trials table shows the study's trials, every worker's, each named by its worker."""
    from test_runner import make_config

    from sd_optim.cli import execute_run
    from sd_optim.ui import views

    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    config = make_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path / "cli-runs",
                         optimizer={"trials": 4, "seed": 0, "study": "team", "storage": storage})
    assert execute_run(config, trials=2, join=True, host=sd1_host)["trials"] == 2
    with webui("forge", tiny_sd1_paths, tiny_sd1_config_dir) as (fake, entry, _, callbacks):
        callbacks.ui_settings_callback()
        fake.shared.opts.sd_optim_output_dir = str(tmp_path / "outputs")
        data = config.to_dict()
        data.pop("output_dir")
        entry.manager().start(data, join=True)
        status = entry.manager().wait()
        assert status["state"] == "finished" and status["trials_done"] == 2, status
        rows = views.trial_rows(entry.manager().run_state().study)
    assert [r[0] for r in rows] == [3, 2, 1, 0] and all(r[1] == "COMPLETE" for r in rows)
    assert [r[5].rsplit("(", 1)[1] for r in rows] == ["forge)", "forge)", "cli)", "cli)"]
