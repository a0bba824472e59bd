"""The tab builds under this environment's gradio (4.40 in `make test`, 3.41 in `make test-a1111`):
every set-up field has its control, the running and results controls are there, the standalone
app injects the extension's style.css and javascript/, and both stay scoped to one prefix."""

from __future__ import annotations

import re
from pathlib import Path

import gradio as gr

from sd_optim.ui import form as fm
from sd_optim.ui.app import build_app, injected_assets

ROOT = Path(__file__).resolve().parents[1]
LIVE_IDS = ["start", "stop", "pause", "resume", "apply_live", "check", "attach", "status", "gallery", "best_gallery",
            "best", "trials_table", "recipe_file", "trial",
            "get_recipe", "save_ckpt", "keep", "look", "look_gallery", "preview", "guide_yaml", "png",
            "payload_pick", "save_payload", "remove_payload", "scorer_use", "load_config", "save_config", "refresh_models", "refresh_studies",
            "recipe_upload", "plot_history", "plot_importance", "plot_slice", "plot_parallel"]


def elem_ids(blocks: gr.Blocks) -> set[str]:
    return {c["props"].get("elem_id") for c in blocks.config["components"] if c.get("props")}


def test_standalone_app_has_a_control_for_every_config_field(tiny_sd1_paths, tmp_path):
    app, manager = build_app(models_dir=str(tiny_sd1_paths[0].parent), output_dir=str(tmp_path / "runs"))
    ids = elem_ids(app)
    missing = [k for k in fm.FIELDS if k != "model_names" and f"sd_optim_{k}" not in ids]
    assert missing == []
    assert [i for i in LIVE_IDS if f"sd_optim_{i}" not in ids] == []
    assert all(f"sd_optim_err_{p}" in ids for p in fm.PANELS)
    dropdown = next(c for c in app.config["components"] if c["props"].get("elem_id") == "sd_optim_models")
    offered = [c[0] if isinstance(c, (list, tuple)) else c for c in dropdown["props"]["choices"]]
    assert tiny_sd1_paths[0].name in offered
    css, js = injected_assets()
    assert css and css.strip() in (app.css or "")
    assert any(js.strip() and js.strip()[:40] in str(d.get("js") or d.get("_js") or "")
               for d in app.config["dependencies"])
    manager.shutdown()


def test_style_and_javascript_stay_inside_the_prefix():
    css = (ROOT / "style.css").read_text(encoding="utf-8")
    selectors = [s.strip() for block in re.findall(r"([^{}]+)\{", re.sub(r"/\*.*?\*/", "", css, flags=re.DOTALL))
                 for s in block.split(",")]
    assert selectors and all(s.startswith(("#sd_optim_", ".sd_optim_")) for s in selectors), selectors
    for script in (ROOT / "javascript").glob("*.js"):
        text = script.read_text(encoding="utf-8")
        ids = re.findall(r"#([A-Za-z][\w-]*)", text)
        # the WebUI's own elements the script may touch: only the checkpoint dropdown's refresh
        # buttons (A1111 / reForge / Classic, Forge), pressed after a checkpoint was saved
        webui = {"refresh_sd_model_checkpoint", "forge_refresh_checkpoint"}
        assert ids and all(i.startswith("sd_optim_") or i in webui for i in ids), (script.name, ids)
        assert all(g.startswith("sd_optim_") for g in re.findall(r"window\.(\w+)\s*=", text))


def test_app_command_refuses_a_missing_models_folder(capsys, tmp_path):
    from sd_optim.cli import main

    assert main(["app", "--models-dir", str(tmp_path / "nope")]) == 2
    assert f"--models-dir: no such folder, got '{tmp_path / 'nope'}'" in capsys.readouterr().err
