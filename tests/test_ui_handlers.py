"""The tab's event handlers called the way gradio calls them (the function each event is bound
to, with the values of its input components), under this environment's gradio: loading and
saving a config file, dropping an image on the prompt sets, adding a set, the guide's YAML view,
picking a recipe, and Check set-up."""

from __future__ import annotations

from pathlib import Path

import pytest
import sd_mecha
import yaml
from PIL import Image, PngImagePlugin

from sd_optim.tiny_models import TINY_SIZE
from sd_optim.ui import catalog as cat
from sd_optim.ui import form as fm
from sd_optim.ui.app import build_app
from sd_optim.ui.tab.payloads import NEW_SET

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sd1-blockwise-weighted-sum.yaml"


class Tab:
    """The built app, its components by elem_id, and its handlers by (elem_id, event)."""

    def __init__(self, app):
        self.app = app
        self.by_id = {b.elem_id: b for b in app.blocks.values() if getattr(b, "elem_id", None)}

    def handler(self, elem_id: str, event: str, updating: str | None = None):
        """The handler of ``elem_id``'s ``event`` (the one that updates ``updating``, where the
        event has several)."""
        target = self.by_id[elem_id]._id
        if isinstance(self.app.fns, dict):  # gradio 4
            found = [f for f in self.app.fns.values() if (target, event) in f.targets]
        else:  # gradio 3.41: the triggers are in the config's dependencies
            found = [f for dep, f in zip(self.app.config["dependencies"], self.app.fns)
                     if target in dep["targets"] and dep["trigger"] == event]
        for f in found:
            if updating is None or updating in [b.elem_id for b in f.outputs]:
                return f
        raise KeyError((elem_id, event, updating))

    def call(self, elem_id: str, event: str, values: dict[str, object], updating: str | None = None
             ) -> dict[str, object]:
        """Run the handler with the components' current values, ``values`` (by elem_id) replacing
        some; the result by output elem_id (gr.update dicts stay dicts)."""
        f = self.handler(elem_id, event, updating)
        return self._by_id(f, f.fn(*[values.get(b.elem_id, b.value) for b in f.inputs]))

    def stream(self, elem_id: str, event: str, values: dict[str, object]):
        """A generator handler's updates, each by output elem_id, as it yields them."""
        f = self.handler(elem_id, event)
        for result in f.fn(*[values.get(b.elem_id, b.value) for b in f.inputs]):
            yield self._by_id(f, result)

    @staticmethod
    def _by_id(f, result) -> dict[str, object]:
        if isinstance(result, dict) and result and all(hasattr(k, "_id") for k in result):
            # outputs addressed by component, as gradio takes them: the ones left out keep their value
            return {b.elem_id: result.get(b, {"__type__": "update"}) for b in f.outputs}
        if not isinstance(result, (list, tuple)) or len(f.outputs) == 1:
            result = [result]
        return {b.elem_id: v for b, v in zip(f.outputs, result)}


def value(x):
    return x.get("value") if isinstance(x, dict) else x


@pytest.fixture
def tab(tiny_sd1_paths, tmp_path):
    app, manager = build_app(models_dir=str(tiny_sd1_paths[0].parent), output_dir=str(tmp_path / "runs"))
    yield Tab(app)
    manager.shutdown()


def test_loading_a_config_file_fills_every_control_and_saving_writes_it_back(tab, tmp_path):
    out = tab.call("sd_optim_load_config", "upload", {"sd_optim_load_config": str(EXAMPLE)})
    assert value(out["sd_optim_method"]) == "weighted_sum"
    assert value(out["sd_optim_trials"]) == yaml.safe_load(EXAMPLE.read_text())["optimizer"]["trials"]
    assert "Loaded sd1-blockwise-weighted-sum.yaml" in out["sd_optim_file_status"]
    values = {k: value(v) for k, v in out.items()}
    saved = tab.call("sd_optim_save_config", "click", values)
    path = Path(value(saved["sd_optim_saved_config"]))
    assert path.parent == tmp_path / "runs" / "configs"
    from sd_optim.config import config_from_dict, load_config

    original = load_config(EXAMPLE)
    again = config_from_dict(yaml.safe_load(path.read_text()), base_dir=EXAMPLE.parent)
    assert again.guide == original.guide and again.payloads == original.payloads
    assert again.merge == original.merge and again.optimizer == original.optimizer


def test_a_bad_config_file_is_refused_with_its_problems(tab, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [a.safetensors]\npayloads: [{prompt: x, steps: 0}]\nscorers: [image_stats]\n")
    out = tab.call("sd_optim_load_config", "upload", {"sd_optim_load_config": str(bad)})
    assert "payloads[0].steps: must be >= 1, got 0" in out["sd_optim_file_status"]
    assert value(out["sd_optim_method"]) is None  # nothing else changed


def test_dropping_an_image_fills_a_prompt_set_and_add_appends_it(tab, tmp_path):
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a castle on a hill\nNegative prompt: fog\nSteps: 14, Sampler: DPM++ 2M, "
                                "Schedule type: Karras, CFG scale: 5.5, Seed: 42, Size: 576x448, Model: x")
    png = tmp_path / "made.png"
    Image.new("RGB", (8, 8)).save(png, pnginfo=info)
    out = tab.call("sd_optim_png", "upload", {"sd_optim_png": str(png)})
    got = {k: value(v) for k, v in out.items()}
    assert (got["sd_optim_edit_prompt"], got["sd_optim_edit_negative"], got["sd_optim_edit_steps"]) == \
        ("a castle on a hill", "fog", 14)
    assert (got["sd_optim_edit_sampler"], got["sd_optim_edit_scheduler"], got["sd_optim_edit_seed"]) == \
        ("DPM++ 2M", "Karras", 42)
    assert (got["sd_optim_edit_cfg"], got["sd_optim_edit_width"], got["sd_optim_edit_height"]) == (5.5, 576, 448)
    assert (got["sd_optim_edit_name"], got["sd_optim_payload_pick"]) == ("set1", NEW_SET)  # a new set
    added = tab.call("sd_optim_save_payload", "click", got)["sd_optim_payloads"]
    assert added[-1][:10] == ["set1", "a castle on a hill", "fog", 42, 14, 5.5, "DPM++ 2M", "Karras", 576, 448]

    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    out = tab.call("sd_optim_png", "upload", {"sd_optim_png": str(plain)})
    assert "has no generation parameters" in out["sd_optim_err_payloads"]


def test_a_prompt_set_is_picked_edited_in_its_form_saved_and_removed(tab):
    first = tab.by_id["sd_optim_payloads"].value
    rows = first["data"] if isinstance(first, dict) else first
    assert value(tab.by_id["sd_optim_payload_pick"].value) == "set0"
    assert tab.by_id["sd_optim_edit_prompt"].value == rows[0][1]  # the form starts on the first set
    # a new set: the form shows the defaults under a free name; saved, it becomes the second row
    new = tab.call("sd_optim_payload_pick", "input", {"sd_optim_payload_pick": NEW_SET})
    got = {k: value(v) for k, v in new.items()}
    assert (got["sd_optim_edit_name"], got["sd_optim_edit_steps"]) == ("set1", fm.payload_defaults()["steps"])
    got.update({"sd_optim_edit_prompt": "a lake", "sd_optim_edit_width": 640, "sd_optim_edit_scorers": ["image_stats"]})
    saved = tab.call("sd_optim_save_payload", "click", got)
    table = value(saved["sd_optim_payloads"])
    assert [r[0] for r in table] == ["set0", "set1"] and table[1][1] == "a lake" and table[1][8] == 640
    assert table[1][12] == "image_stats" and value(saved["sd_optim_payload_pick"]) == "set1"
    # the table changed: the summary follows, the pick stays
    moved = tab.call("sd_optim_payloads", "change", {"sd_optim_payloads": table, "sd_optim_payload_pick": "set1"})
    assert "**set1** · a lake · 640×" in moved["sd_optim_payload_summary"]
    assert value(moved["sd_optim_payload_pick"]) is None  # only its choices updated
    # picking the first set shows it; saving under its own name replaces it
    shown = tab.call("sd_optim_payload_pick", "input", {"sd_optim_payload_pick": "set0", "sd_optim_payloads": table})
    assert value(shown["sd_optim_edit_prompt"]) == rows[0][1]
    again = {**{k: value(v) for k, v in shown.items()}, "sd_optim_payloads": table, "sd_optim_edit_steps": 7}
    replaced = value(tab.call("sd_optim_save_payload", "click", again)["sd_optim_payloads"])
    assert [r[0] for r in replaced] == ["set0", "set1"] and replaced[0][4] == 7
    # removed: the form moves to the first set left, and a table without the picked set moves it too
    gone = tab.call("sd_optim_remove_payload", "click", {"sd_optim_payloads": replaced, "sd_optim_edit_name": "set0"})
    assert [r[0] for r in value(gone["sd_optim_payloads"])] == ["set1"]
    assert value(gone["sd_optim_payload_pick"]) == "set1" and value(gone["sd_optim_edit_prompt"]) == "a lake"


def test_scorers_are_ticked_in_a_list_and_the_table_keeps_their_options(tab):
    use = tab.by_id["sd_optim_scorer_use"]
    assert value(use.value) == [] and "image_stats" in [c[0] if isinstance(c, (list, tuple)) else c
                                                         for c in use.choices]
    out = tab.call("sd_optim_scorer_use", "change", {"sd_optim_scorer_use": ["image_stats"]})
    assert "image_stats" in out["sd_optim_scorer_status"]
    # M (the button) adds the manual scorer's tick, and takes it away again
    on = tab.call("sd_optim_toggle_manual", "click", {"sd_optim_scorer_use": ["image_stats"]})
    assert value(on["sd_optim_scorer_use"]) == ["image_stats", "manual"]
    off = tab.call("sd_optim_toggle_manual", "click", {"sd_optim_scorer_use": ["image_stats", "manual"]})
    assert value(off["sd_optim_scorer_use"]) == ["image_stats"]
    # the table is sent only when it gains the manual row: its change, answered late, would
    # otherwise tick manual again after M pressed twice quickly
    with_manual = [["image_stats", 1, ""], ["manual", 1, ""]]
    off = tab.call("sd_optim_toggle_manual", "click", {"sd_optim_scorers": with_manual,
                                                       "sd_optim_scorer_use": ["manual"]})
    assert set(off["sd_optim_scorers"]) == {"__type__"} and value(off["sd_optim_scorer_use"]) == []
    late = tab.call("sd_optim_scorers", "change", {"sd_optim_scorers": with_manual, "sd_optim_scorer_use": ["manual"]},
                    updating="sd_optim_scorer_use")
    assert "value" not in late["sd_optim_scorer_use"]  # the ticks as they are now stay
    # a row taken out of the table takes its tick with it; a new row is offered
    rows = [["image_stats", 2, ""], ["clip_score", 1, ""]]
    out = tab.call("sd_optim_scorers", "change", {"sd_optim_scorers": rows, "sd_optim_scorer_use": ["manual", "image_stats"]},
                   updating="sd_optim_scorer_use")
    assert out["sd_optim_scorer_use"]["choices"] == ["image_stats", "clip_score"]
    assert value(out["sd_optim_scorer_use"]) == ["image_stats"]
    data = fm.form_to_data({"scorers": rows, "scorer_use": ["image_stats"]})
    assert data["scorers"] == [{"name": "image_stats", "weight": 2}]


def test_guide_yaml_view_applies_back_into_the_tables(tab):
    text = "guide:\n  diffuser:\n  - strategy: select\n    patterns: [IN0*]\n  bounds:\n    alpha: {low: 0.2}\n"
    out = tab.call("sd_optim_apply_guide_yaml", "click", {"sd_optim_guide_yaml": text})
    assert value(out["sd_optim_strategies"]) == [["diffuser", "select", "", "IN0*", "", "", ""]]
    assert value(out["sd_optim_bounds"]) == [["alpha", 0.2, "", False, "", "", ""]]
    out = tab.call("sd_optim_apply_guide_yaml", "click", {"sd_optim_guide_yaml": "guide:\n  diffuser: [selct]"})
    assert "guide.diffuser[0].strategy: must be one of" in out["sd_optim_err_guide"]


def test_a_recipe_lists_its_sites_and_check_reports_by_panel(tab, tiny_sd1_paths, tmp_path):
    recipe = sd_mecha.weighted_sum(sd_mecha.model(str(tiny_sd1_paths[0]), "sd1-ldm"),
                                   sd_mecha.model(str(tiny_sd1_paths[1]), "sd1-ldm"), alpha=0.3)
    path = tmp_path / "r.mecha"
    path.write_text(sd_mecha.serialize(recipe), encoding="utf-8")
    out = tab.call("sd_optim_recipe_path", "change", {"sd_optim_recipe_path": str(path)})
    assert value(out["sd_optim_recipe_sites"])[0][:3] == ["&5.alpha", 0.3, True]
    out = tab.call("sd_optim_check", "click", {"sd_optim_models": [tiny_sd1_paths[0].name],
                                              "sd_optim_payloads": [["", "", "", "", "", "", "", "", "", "", "",
                                                                     "", ""]]})
    assert "merge mode needs at least two checkpoints" in out["sd_optim_err_models"]
    assert "at least one prompt set is required" in out["sd_optim_err_payloads"]
    # the status names the first problem and its panel; the panels with problems open
    assert out["sd_optim_status"].startswith("**Fix the set-up:** models: merge mode needs at least two")
    assert "(panel 1 · Models; " in out["sd_optim_status"] and "more marked)" in out["sd_optim_status"]
    assert out["sd_optim_panel_payloads"]["open"] is True and out["sd_optim_panel_models"]["open"] is True
    assert "open" not in out["sd_optim_panel_optimizer"]  # no problem there: left as the user has it


def test_form_fields_are_the_inputs_of_start(tab):
    f = tab.handler("sd_optim_start", "click")
    assert [b.elem_id for b in f.inputs if b.elem_id] == [f"sd_optim_{k}" for k in fm.FIELDS
                                                          if k != "model_names"]


def _by_elem_id(result: dict) -> dict:
    return {component.elem_id: v for component, v in result.items()}


def test_a_reloaded_page_gets_the_runs_set_up_back(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path):
    app, manager = build_app(models_dir=str(tiny_sd1_paths[0].parent), output_dir=str(tmp_path / "runs"))
    try:
        form = {**fm.FORM_DEFAULTS, "models": [str(p) for p in tiny_sd1_paths[:2]],
                "diffusers_config": str(tiny_sd1_config_dir), "device": "cpu",
                "payloads": [["fox", "a red fox", "", 3, 2, 5, "Euler", "Automatic", TINY_SIZE, TINY_SIZE, 1, 1, ""]],
                "strategies": [["diffuser", "single", "", "", "", "", ""]],
                "scorers": [["image_stats", 1, ""]], "scorer_use": ["image_stats"], "sampler": "random", "trials": 2,
                "study": "reloaded", "scorer_mean": "geometric"}
        manager.start(fm.form_to_data(form))
        assert manager.wait(120)["state"] == "finished"

        # a reload builds the page anew (the panels at their defaults), then presses attach
        shown = _by_elem_id(next(Tab(app).handler("sd_optim_attach", "click").fn()))
        assert value(shown["sd_optim_models"]) == [p.name for p in tiny_sd1_paths[:2]]
        assert (shown["sd_optim_trials"], shown["sd_optim_study"], shown["sd_optim_scorer_mean"]) == \
            (2, "reloaded", "geometric")
        assert value(shown["sd_optim_payloads"])[0][:2] == ["fox", "a red fox"]
        assert value(shown["sd_optim_scorer_use"]) == ["image_stats"]
        assert value(shown["sd_optim_scorers"])[0] == ["image_stats", 1, ""]
        # opening the Trials tab sends its table again (gradio 4 may not draw one updated while hidden)
        table = _by_elem_id(Tab(app).handler("sd_optim_tab_trials", "select").fn())["sd_optim_trials_table"]
        assert [row[0] for row in value(table)] == [1, 0]
    finally:
        manager.shutdown()


def test_a_strategy_is_picked_from_lists_and_added_as_a_row(tab):
    choices = [c[0] if isinstance(c, (list, tuple)) else c for c in tab.by_id["sd_optim_add_component"].choices]
    assert choices[:2] == ["diffuser", "clip_l"]  # the components of the models' architecture (sd1)
    out = tab.call("sd_optim_add_strategy_row", "click", {
        "sd_optim_add_component": "clip_l", "sd_optim_add_strategy": "none",
        "sd_optim_strategies": [["diffuser", "all", "", "", "", "", ""], ["", "", "", "", "", "", ""]]})
    assert value(out["sd_optim_strategies"]) == [["diffuser", "all", "", "", "", "", ""],
                                                 ["clip_l", "none", "", "", "", "", ""]]
    keys = tab.call("sd_optim_add_strategy_row", "click", {
        "sd_optim_add_component": "clip_l", "sd_optim_add_strategy": "select", "sd_optim_add_items": "keys",
        "sd_optim_strategies": []})
    assert value(keys["sd_optim_strategies"]) == [["clip_l", "select", "keys", "", "", "", ""]]


def test_the_scorer_guide_lists_every_scorer_and_download_fetches_one(tiny_scorer, server, tiny_sd1_paths,
                                                                       tmp_path, monkeypatch):
    monkeypatch.setattr(tiny_scorer, "offered_before_download", False)  # as hpsv3: offered once installed
    app, manager = build_app(models_dir=str(tiny_sd1_paths[0].parent), output_dir=str(tmp_path / "runs"))
    try:
        tab = Tab(app)
        folder = str(tmp_path / "scorer-models")
        shown = tab.call("sd_optim_models_dir", "change", {"sd_optim_models_dir": folder}, updating="sd_optim_scorer_guide")
        assert "`tiny_weights` — a test scorer with one weight file · **missing 1 file**" in shown["sd_optim_scorer_guide"]
        assert "`image_stats` — sharpness" in shown["sd_optim_scorer_guide"]
        assert "tiny_weights" in shown["sd_optim_download_scorer"]["choices"]
        assert "tiny_weights" not in [row[0] for row in cat.scorer_rows(folder)]
        steps = list(tab.handler("sd_optim_download", "click").fn(
            "tiny_weights", folder, [["image_stats", 1, ""]], ["image_stats"]))
        by_id = [{b.elem_id: v for b, v in step.items()} for step in steps]
        last = by_id[-1]
        assert last["sd_optim_download_status"].startswith("Downloaded tiny_weights: ")
        assert (tmp_path / "scorer-models" / "tiny" / "w.safetensors").is_file()
        assert "`tiny_weights` — a test scorer with one weight file · ready" in last["sd_optim_scorer_guide"]
        assert "image_stats: ready" in last["sd_optim_scorer_status"]
        assert value(last["sd_optim_scorers"])[0] == ["image_stats", 1, ""]  # the table kept, the scorer joins it
        assert ["tiny_weights", 1.0, ""] in value(last["sd_optim_scorers"])
        # an unreachable source says so, and nothing is placed
        (tmp_path / "scorer-models" / "tiny" / "w.safetensors").unlink()
        server.close()
        steps = list(tab.handler("sd_optim_download", "click").fn("tiny_weights", folder, [], []))
        status = {b.elem_id: v for b, v in steps[-1].items()}["sd_optim_download_status"]
        assert status.startswith("⚠ could not reach 127.0.0.1:") and not list((tmp_path / "scorer-models").rglob("*.safetensors"))
    finally:
        manager.shutdown()


def test_watch_shows_a_shared_study_the_tab_did_not_start(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path, monkeypatch):
    """A study CLI workers run in a shared database: Watch shows its trials (with their worker),
    its best and its plots, read-only, following it while trials run; a study that is not there
    is named in the panel."""
    import optuna
    from test_runner import make_config

    from sd_optim.cli import execute_run
    from sd_optim.hosts.diffusers_host import DiffusersHost
    from sd_optim.ui.tab import optimizer as optimizer_panel

    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    config = make_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path / "cli-runs",
                         optimizer={"sampler": "random", "trials": 3, "seed": 0, "study": "team", "storage": storage})
    host = DiffusersHost(tiny_sd1_paths[0], config_dir=tiny_sd1_config_dir, device="cpu")
    assert execute_run(config, join=True, host=host)["trials"] == 3
    app, manager = build_app(models_dir=str(tiny_sd1_paths[0].parent), output_dir=str(tmp_path / "runs"))
    try:
        tab = Tab(app)
        (shown,) = tab.stream("sd_optim_watch_study", "click",
                              {"sd_optim_storage": storage, "sd_optim_source_study": "team (3 trials, best 0.5)"})
        assert "Study **team** (3 trials) as it is now" in shown["sd_optim_best"]  # nothing runs: not followed
        assert not shown["sd_optim_err_optimizer"]
        rows = value(shown["sd_optim_trials_table"])
        assert [r[0] for r in rows] == [2, 1, 0] and all(r[5].endswith("(cli)") for r in rows)
        assert "**Best: trial " in shown["sd_optim_best"]
        assert any(v is not None for k, v in shown.items() if k.startswith("sd_optim_plot_"))
        (missing,) = tab.stream("sd_optim_watch_study", "click",
                                {"sd_optim_storage": storage, "sd_optim_source_study": "gone"})
        assert "no study named 'gone'" in missing["sd_optim_err_optimizer"]
        # while a trial runs in it (another worker's), the view follows the study as it changes
        monkeypatch.setattr(optimizer_panel, "WATCH_POLL_S", 0.05)
        elsewhere = optuna.load_study(study_name="team", storage=storage)
        running = elsewhere.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        updates = tab.stream("sd_optim_watch_study", "click", {"sd_optim_storage": storage, "sd_optim_source_study": "team"})
        first = next(updates)
        assert "Watching study **team** (4 trials, 1 running), live" in first["sd_optim_best"]
        elsewhere.tell(running, 0.25)
        rest = list(updates)
        assert "(4 trials) as it is now" in rest[-1]["sd_optim_best"]
        assert value(rest[-1]["sd_optim_trials_table"])[0][0] == 3  # the trial told meanwhile, first
    finally:
        manager.shutdown()


def test_an_old_sd_optim_set_up_is_imported_into_every_control(tab, tmp_path, tiny_sd1_paths):
    """Config file → Import the old set-up: what import-config converts, into the controls, and what
    it could not carry over in the status."""
    old = tmp_path / "config.yaml"
    old.write_text(f"merge:\n  model_paths: [{tiny_sd1_paths[0]}, {tiny_sd1_paths[1]}]\n  merge_method: weighted_sum\n"
                   "optimizer: {optuna: True, init_points: 2, n_iters: 6}\nscoring: {scorer_method: [laion]}\n"
                   "url: http://localhost:7860\n", encoding="utf-8")
    cargo = tmp_path / "cargo_forge.yaml"
    cargo.write_text("defaults:\n  - cargo: [fox]\nsteps: 12\nclip_skip: 2\n", encoding="utf-8")
    fox = tmp_path / "fox.yaml"
    fox.write_text("fox:\n  prompt: a red fox\n", encoding="utf-8")
    out = tab.call("sd_optim_import_old", "click", {"sd_optim_old_config": str(old), "sd_optim_old_guide": None,
                                                     "sd_optim_old_payloads": [str(cargo), str(fox)]})
    assert value(out["sd_optim_method"]) == "weighted_sum" and value(out["sd_optim_trials"]) == 8
    assert value(out["sd_optim_payloads"])[0][:2] == ["fox", "a red fox"]
    status = out["sd_optim_file_status"]
    assert "Imported config.yaml" in status and "`payload fox: clip_skip`" in status and "`url`" in status
    empty = tab.call("sd_optim_import_old", "click", {"sd_optim_old_config": None})
    assert "upload the old config.yaml first" in empty["sd_optim_file_status"]
