"""The standalone demo app in a real headless Chromium, as a user drives it. Runs under whichever
gradio the suite's environment has: 4.40 in `make test`, 3.41 in `make test-a1111`."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import gradio as gr
import pytest
import sd_mecha
from browser import CHROMIUM, GradioPage, browser_page, free_port, serve

from sd_optim.ui.tab.payloads import NEW_SET

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "test-output"  # screenshots stay here for a person to look at (git ignores it)
# `make screenshots` sets this to docs/screenshots: the README's walkthrough pictures
WALKTHROUGH = os.environ.get("SD_OPTIM_SCREENSHOTS", "")

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="Debian chromium is missing: run tools/ensure-chromium.sh (make test does)")


def tab(ui: GradioPage, label: str) -> None:
    ui.page.locator("#sd_optim_tabs button", has_text=label).first.click()


def close_accordion(ui: GradioPage, label: str) -> None:
    header = ui.page.locator(".label-wrap").filter(has=ui.page.get_by_text(label, exact=True)).first
    if "open" in (header.get_attribute("class") or "").split():
        header.click()
    ui.wait_for(lambda: "open" not in (header.get_attribute("class") or "").split(),
                message=f"accordion {label!r} closed")


def walkthrough(ui: GradioPage, name: str) -> None:
    """A 1280x800 picture of the page for the README, when asked for (SD_OPTIM_SCREENSHOTS)."""
    if WALKTHROUGH:
        Path(WALKTHROUGH).mkdir(parents=True, exist_ok=True)
        ui.page.screenshot(path=str(Path(WALKTHROUGH) / name))


def in_view(ui: GradioPage, elem_id: str) -> bool:
    box = ui.root(elem_id).bounding_box()
    return box is not None and box["y"] >= 0 and box["y"] + min(box["height"], 100) <= 800


PLOT_FITS = """() => {
    const box = document.querySelector("#sd_optim_plot_history");
    const drawn = box && box.querySelector("svg.main-svg, img");
    if (!drawn) return false;
    const width = drawn.getBoundingClientRect().width;
    return width > 50 && width <= box.getBoundingClientRect().width + 2;
}"""


# The tab's elements that a box drawn past its own bottom would cover: a box that does not clip
# its overflow paints as far down as its lowest descendant.
COVERED_BY = """(id) => {
    const box = document.getElementById(id), own = box.getBoundingClientRect();
    let bottom = own.bottom;
    if (!["auto", "scroll", "hidden", "clip"].includes(getComputedStyle(box).overflowY))
        for (const el of box.querySelectorAll("*")) bottom = Math.max(bottom, el.getBoundingClientRect().bottom);
    return [...document.querySelectorAll("[id^=sd_optim_]")].filter(el => {
        const r = el.getBoundingClientRect();
        return !box.contains(el) && !el.contains(box) && r.height > 0 && r.top >= own.bottom - 1
            && r.top < bottom - 1;
    }).map(el => el.id);
}"""


# every text the status line shows from now on, in window.sd_optim_test_seen
RECORD_STATUS = """() => {
    const status = document.getElementById("sd_optim_status");
    window.sd_optim_test_seen = [status.innerText];
    new MutationObserver(() => window.sd_optim_test_seen.push(status.innerText))
        .observe(status, {subtree: true, childList: true, characterData: true});
}"""


def covered_by(ui: GradioPage, elem_id: str) -> list[str]:
    return ui.page.evaluate(COVERED_BY, elem_id)


@contextlib.contextmanager
def demo_app(tmp_path: Path, env: dict[str, str] | None = None):
    """The demo app served (``env`` added to its environment), and a page showing it: (the page
    helper, its URL)."""
    port = free_port()
    argv = [sys.executable, "-m", "sd_optim", "app", "--demo", "--out", str(tmp_path / "demo"),
            "--port", str(port)]
    with serve(argv, port=port, timeout=240, env=env) as url, browser_page(tmp_path) as page:
        ui = GradioPage(page)
        ui.goto(url)
        yield ui, url


def test_demo_app_from_set_up_to_best_mecha(tmp_path):
    with demo_app(tmp_path) as (ui, url):
        page = ui.page
        assert ui.duplicate_ids() == []
        models = ui.selected("sd_optim_models")
        assert len(models) == 2, models

        # set up: a method, two models, one guide strategy edited (the preview follows)
        ui.pick("sd_optim_method", "add_difference")
        ui.wait_for(lambda: "base model" in ui.text("sd_optim_method_info"), timeout=30,
                    message="add_difference info")
        ui.pick("sd_optim_method", "weighted_sum")
        ui.pick_many("sd_optim_models", list(reversed(models)))
        ui.pick_many("sd_optim_models", models)
        ui.wait_for(lambda: "2 parameters to tune" in ui.text("sd_optim_preview"), timeout=30,
                    message="preview of 2")
        assert ui.cell("sd_optim_strategies", 0, 0) == "diffuser"
        ui.edit_cell("sd_optim_strategies", 0, 1, "all")
        ui.wait_for(lambda: "27 parameters to tune" in ui.text("sd_optim_preview"), timeout=20,
                    message="the preview after diffuser: single -> all")
        assert "diffuser.IN04.alpha" in ui.text("sd_optim_preview")
        assert covered_by(ui, "sd_optim_preview") == []  # the long list scrolls inside its box
        ui.root("sd_optim_preview").scroll_into_view_if_needed()
        walkthrough(ui, "1-set-up.png")

        # a scorer ticked with one click, and unticked with another: the readiness list follows
        ui.open_accordion("5 · Scorers")
        assert ui.ticked("sd_optim_scorer_use") == ["reference"]  # the demo's set-up
        ui.tick("sd_optim_scorer_use", "image_stats")
        ui.wait_for(lambda: "image_stats: ready" in ui.text("sd_optim_scorer_status"), timeout=20,
                    message="image_stats ticked by one click")
        ui.tick("sd_optim_scorer_use", "image_stats")
        ui.wait_for(lambda: "image_stats" not in ui.text("sd_optim_scorer_status"), timeout=20,
                    message="image_stats unticked")
        close_accordion(ui, "5 · Scorers")
        # a prompt set made in its form (lists for the sampler and the scorers), saved, then removed
        ui.open_accordion("4 · Prompt sets")
        assert ui.selected("sd_optim_payload_pick") == ["cat"] and ui.text("sd_optim_edit_prompt") == "a photo of a cat"
        ui.pick("sd_optim_payload_pick", NEW_SET)
        ui.wait_for(lambda: ui.text("sd_optim_edit_name") == "set2", timeout=20, message="a new set's form")
        ui.fill("sd_optim_edit_prompt", "a red fox")
        ui.pick("sd_optim_edit_sampler", "Euler a")
        ui.tick("sd_optim_edit_scorers", "reference")
        ui.click("sd_optim_save_payload")
        ui.wait_for(lambda: "set2 · a red fox" in ui.text("sd_optim_payload_summary"), timeout=20,
                    message="the new set in the summary")
        assert "20 steps · Euler a · 1 image(s)" in ui.text("sd_optim_payload_summary").splitlines()[-1]
        ui.root("sd_optim_payload_summary").evaluate("el => el.scrollIntoView()")
        walkthrough(ui, "1b-prompt-set.png")
        assert covered_by(ui, "sd_optim_panel_payloads") == []
        ui.click("sd_optim_remove_payload")
        ui.wait_for(lambda: "a red fox" not in ui.text("sd_optim_payload_summary"), timeout=20, message="removed")
        ui.wait_for(lambda: ui.selected("sd_optim_payload_pick") == ["cat"], timeout=20, message="back on cat")
        close_accordion(ui, "4 · Prompt sets")

        # with the set-up panels collapsed, Start, the status line and the gallery fit 1280x800
        for label in ("1 · Models", "2 · Merge method or recipe", "3 · What to tune (guide)"):
            close_accordion(ui, label)
        page.evaluate("window.scrollTo(0, 0)")
        assert all(in_view(ui, e) for e in ("sd_optim_start", "sd_optim_status", "sd_optim_gallery"))

        # run (long enough to still be live after a reload): images arrive in the live gallery, the
        # trials table fills; a reload reattaches to the run; then Stop
        ui.open_accordion("6 · Optimizer")
        ui.fill("sd_optim_trials", "60")
        close_accordion(ui, "6 · Optimizer")
        title = page.title()
        ui.click("sd_optim_start")
        ui.wait_for(lambda: ui.gallery_count("sd_optim_gallery") > 0, timeout=120,
                    message="images in the live gallery")
        tab(ui, "Trials")
        ui.wait_for(lambda: ui.row_count("sd_optim_trials_table") >= 3, timeout=120,
                    message="three rows in the trials table")
        assert "of 60" in ui.text("sd_optim_status")
        page.evaluate("window.scrollTo(0, 0)")
        walkthrough(ui, "2-live-run.png")
        finished = ui.row_count("sd_optim_trials_table") - 1  # the newest row may be in flight
        ui.goto(url)  # a reload: the run lives in the server
        ui.wait_for(lambda: "of 60" in ui.text("sd_optim_status"), timeout=30, message="reattached to the run")
        # ... and its set-up is back in the panels (not the page's defaults)
        ui.wait_for(lambda: ui.text("sd_optim_trials") == "60", timeout=30, message="the run's trial limit back")
        assert ui.selected("sd_optim_models") == models and ui.cell("sd_optim_strategies", 0, 1) == "all"
        tab(ui, "Trials")
        ui.wait_for(lambda: ui.row_count("sd_optim_trials_table") >= finished, timeout=30,
                    message=f"the {finished} finished trials after the reload")
        assert ui.gallery_count("sd_optim_gallery") > 0
        # Stop is acknowledged at once (the image in flight may take a while): every text the
        # status line shows is recorded from the click on
        page.evaluate(RECORD_STATUS)
        ui.click("sd_optim_stop")
        ui.wait_for(lambda: any("stopping after the current image" in t or "finished" in t
                                for t in page.evaluate("window.sd_optim_test_seen")),
                    timeout=3, message="Stop acknowledged within 3 s")
        ui.wait_for(lambda: "finished" in ui.text("sd_optim_status"), timeout=120, message="the run ends")
        assert any("stopping after the current image" in t for t in page.evaluate("window.sd_optim_test_seen"))
        assert ui.row_count("sd_optim_trials_table") >= 1
        ui.wait_for(lambda: page.title() == title, timeout=30, message=f"the page title back to {title!r}")

        # the plots were drawn while their tab was hidden: opening it fits them to their column
        tab(ui, "Plots")
        ui.wait_for(lambda: page.evaluate(PLOT_FITS), timeout=20, message="the history plot fits its column")
        walkthrough(ui, "3-plots.png")

        # results: best.mecha downloads and deserializes
        tab(ui, "Results")
        ui.wait_for(lambda: ui.root("sd_optim_recipe_file").locator("a[download]").count() > 0, timeout=30,
                    message="best.mecha offered")
        walkthrough(ui, "4-results.png")
        recipe = ui.download("sd_optim_recipe_file", tmp_path)
        assert recipe.name == "best.mecha"
        assert sd_mecha.deserialize_path(recipe) is not None

        # Save as checkpoint: in a WebUI the tab presses the checkpoint dropdown's own refresh
        # button, so the new file is listed at once (here a stand-in button counts the presses)
        page.evaluate("""() => { const b = document.createElement("button");
            b.id = "refresh_sd_model_checkpoint"; b.dataset.pressed = "0";
            b.onclick = () => { b.dataset.pressed = String(+b.dataset.pressed + 1); };
            document.body.appendChild(b); }""")
        ui.fill("sd_optim_ckpt_name", "browser-saved")
        ui.click("sd_optim_save_ckpt")
        ui.wait_for(lambda: "Saved trial" in ui.text("sd_optim_result_status"), timeout=60, message="saved")
        ui.wait_for(lambda: page.evaluate("document.getElementById('refresh_sd_model_checkpoint')"
                                          ".dataset.pressed") == "1", timeout=10, message="refresh pressed once")
        # a strategy picked from two lists, not typed: it becomes the table's next row
        ui.open_accordion("3 · What to tune (guide)")
        ui.pick("sd_optim_add_component", "clip_l")
        ui.pick("sd_optim_add_strategy", "none")
        ui.click("sd_optim_add_strategy_row")
        ui.wait_for(lambda: ui.row_count("sd_optim_strategies") == 3, timeout=20, message="a third strategy row")
        assert [ui.cell("sd_optim_strategies", 2, c) for c in (0, 1)] == ["clip_l", "none"]
        tab(ui, "Best so far")
        assert covered_by(ui, "sd_optim_best") == []
        OUTPUT.mkdir(exist_ok=True)
        ui.screenshot(OUTPUT / f"demo-app-gradio-{gr.__version__}.png")


def test_pause_change_the_trial_limit_and_resume_with_the_keyboard(tmp_path):
    with demo_app(tmp_path) as (ui, _url):
        page = ui.page
        # a problem in a closed panel below the fold: Start names it, opens the panel, scrolls to it
        ui.open_accordion("6 · Optimizer")
        ui.fill("sd_optim_trials", "0")
        close_accordion(ui, "6 · Optimizer")
        page.evaluate("window.scrollTo(0, 0)")
        ui.click("sd_optim_start")
        ui.wait_for(lambda: "optimizer.trials: must be >= 1" in ui.text("sd_optim_status"), timeout=30,
                    message="the refused Start names the problem")
        assert "(panel 6 · Optimizer)" in ui.text("sd_optim_status")
        ui.wait_for(lambda: in_view(ui, "sd_optim_err_optimizer"), timeout=10, message="scrolled to panel 6")
        ui.fill("sd_optim_trials", "60")
        ui.click("sd_optim_start")
        ui.wait_for(lambda: ui.gallery_count("sd_optim_gallery") > 0, timeout=120, message="a first image")
        ui.click("sd_optim_pause")
        ui.wait_for(lambda: "paused" in ui.text("sd_optim_status"), timeout=30, message="paused")
        ui.fill("sd_optim_trials", "5")
        ui.click("sd_optim_apply_live")
        ui.wait_for(lambda: "trials this run: 5" in ui.text("sd_optim_apply_status"), timeout=30,
                    message="limit applied")
        # M switches rating by hand on and off in the set-up (for the next Start)
        ui.root("sd_optim_status").click()
        page.keyboard.press("m")
        ui.wait_for(lambda: "manual: ready" in ui.text("sd_optim_scorer_status"), timeout=30,
                    message="M ticked the manual scorer")
        page.keyboard.press("m")
        ui.wait_for(lambda: "manual" not in ui.text("sd_optim_scorer_status"), timeout=30,
                    message="M unticked it again")
        # the P shortcut resumes, but not while a text field has the focus
        ui.root("sd_optim_study").locator("textarea, input").first.click()
        page.keyboard.press("p")
        page.wait_for_timeout(1500)  # a shortcut that fired would show within a few hundred ms
        assert "paused" in ui.text("sd_optim_status")
        ui.fill("sd_optim_study", "")
        ui.root("sd_optim_status").click()
        page.keyboard.press("p")
        ui.wait_for(lambda: "finished (completed), 5 trials" in ui.text("sd_optim_status"), timeout=120,
                    message="the run resumed by the P key ends at the new limit")


def test_rating_by_hand_with_buttons_and_keys_and_stop_while_waiting(tmp_path):
    import yaml

    from sd_optim.ui.app import demo_setup

    with demo_app(tmp_path) as (ui, _url):
        page = ui.page
        # the demo's set-up, rated by hand, loaded as a config file (the app made the models)
        data = demo_setup(tmp_path / "demo")
        data.update(scorers=[{"name": "manual"}], optimizer={"sampler": "random", "trials": 3, "seed": 0},
                    output_dir=str(tmp_path / "demo" / "runs"), device="cpu")
        config = tmp_path / "by-hand.yaml"
        config.write_text(yaml.safe_dump(data), encoding="utf-8")
        ui.open_accordion("Config file")
        ui.root("sd_optim_load_config").locator("input[type=file]").set_input_files(str(config))
        ui.wait_for(lambda: "Loaded by-hand.yaml" in ui.text("sd_optim_file_status"), timeout=30,
                    message="the config loaded")
        ui.click("sd_optim_start")

        def waiting_for(trial: int) -> bool:
            return f"Rate trial {trial} ·" in ui.text("sd_optim_rate_caption")

        # trial 0 with the buttons: three images (two of "cat", one of "house")
        for rating in (9, 7, 8):
            ui.wait_for(lambda: waiting_for(0) and "waiting for your rating" in ui.text("sd_optim_status"),
                        timeout=120, message="trial 0 waiting for a rating")
            before = ui.text("sd_optim_rate_caption")
            if rating == 9:
                page.evaluate("window.scrollTo(0, 0)")
                walkthrough(ui, "5-rating.png")
            ui.click(f"sd_optim_rate_{rating}")
            ui.wait_for(lambda b=before: ui.text("sd_optim_rate_caption") != b, timeout=30,
                        message="the next image to rate")
        # trial 1 with the number keys (0 is 10)
        for key in ("3", "0", "5"):
            ui.wait_for(lambda: waiting_for(1), timeout=120, message="trial 1 waiting for a rating")
            before = ui.text("sd_optim_rate_caption")
            ui.root("sd_optim_status").click()  # the focus outside any text field
            page.keyboard.press(key)
            ui.wait_for(lambda b=before: ui.text("sd_optim_rate_caption") != b, timeout=30,
                        message=f"key {key} rated the image")
        # trial 2 waits for its first rating: Stop ends the run cleanly
        ui.wait_for(lambda: waiting_for(2), timeout=120, message="trial 2 waiting for a rating")
        ui.click("sd_optim_stop")
        ui.wait_for(lambda: "finished (stopped from the tab), 3 trials" in ui.text("sd_optim_status"),
                    timeout=60, message="the run stopped while waiting")
        assert not ui.root("sd_optim_rate").is_visible()
        tab(ui, "Trials")
        ui.wait_for(lambda: ui.row_count("sd_optim_trials_table") == 3, timeout=30, message="three rows")
        values = {ui.cell("sd_optim_trials_table", r, 0): ui.cell("sd_optim_trials_table", r, 2) for r in range(3)}
        assert float(values["0"]) == pytest.approx(0.8, abs=1e-3)  # cat (9 + 7) / 2 / 10, house 8 / 10
        assert float(values["1"]) == pytest.approx(0.575, abs=1e-3)  # (3 + 10) / 2 / 10 and 5 / 10


def test_a_scorer_downloaded_in_the_tab_scores_a_run_beside_another(tmp_path):
    import json

    from file_server import Server

    from sd_optim.scoring.blip import FILES
    from sd_optim.scoring.tiny import write_tiny_blip_itm

    made = tmp_path / "made" / "blip-itm-large-coco"
    write_tiny_blip_itm(made)
    hub = {f"Salesforce/blip-itm-large-coco/{f.hf_file}": (made / f.hf_file).read_bytes() for f in FILES}
    server = Server(hub)  # Hugging Face's layout on a loopback port
    env = {"HF_ENDPOINT": f"http://127.0.0.1:{server.port}", "HF_HUB_OFFLINE": "0"}
    try:
        with demo_app(tmp_path, env) as (ui, _url):
            ui.open_accordion("5 · Scorers")
            ui.fill("sd_optim_models_dir", str(tmp_path / "scorer-models"))
            ui.open_accordion("What each scorer measures · download weights")
            ui.wait_for(lambda: "blip_itm" in ui.selected("sd_optim_download_scorer") or
                        "missing 6 files" in ui.text("sd_optim_scorer_guide"), timeout=30, message="blip_itm missing")
            ui.pick("sd_optim_download_scorer", "blip_itm")
            ui.click("sd_optim_download")
            ui.wait_for(lambda: "Downloaded blip_itm" in ui.text("sd_optim_download_status"), timeout=90,
                        message="the download finished")
            assert (tmp_path / "scorer-models" / "blip-itm-large-coco" / "model.safetensors").is_file()
            ui.tick("sd_optim_scorer_use", "blip_itm")
            ui.wait_for(lambda: "blip_itm: ready" in ui.text("sd_optim_scorer_status"), timeout=30,
                        message="blip_itm ticked and ready")
            assert set(ui.ticked("sd_optim_scorer_use")) == {"reference", "blip_itm"}
            ui.open_accordion("6 · Optimizer")
            ui.fill("sd_optim_trials", "2")
            ui.click("sd_optim_start")
            ui.wait_for(lambda: "finished (completed), 2 trials" in ui.text("sd_optim_status"), timeout=240,
                        message="the run with two scorers ends")
        rows = [json.loads(line) for path in (tmp_path / "demo").rglob("trials.jsonl")
                for line in path.read_text(encoding="utf-8").splitlines()]
        trials = [r for r in rows if r.get("kind") == "trial"]
        assert len(trials) == 2 and all(set(r["scores"]["cat"]) == {"reference", "blip_itm"} for r in trials)
    finally:
        server.close()

