"""The "Optimize Merge" tab: set up a run, watch it live, keep the result.

One layout for gradio 3.41 and 4.x (differences in :mod:`.compat`). The left column holds the
set-up panels (each control maps to a run-config field, see :mod:`.form`); the right column the
Start/Stop bar, the status line, the live gallery, the best-so-far panel, and tabs for the trials
table, the plots and the results. Element ids and CSS classes start with ``sd_optim_``.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import yaml

from ..config import safe_yaml
from ..errors import ConfigError, Problem
from . import catalog as cat
from . import compat, views
from . import form as fm
from .runs import RunBusy, RunManager, read_config

log = logging.getLogger("sd_optim")

P = "sd_optim_"  # the one prefix of element ids and CSS classes
STRATEGY_HELP = (
    "One row per strategy. **component**: diffuser, clip_l, clip_g, vae (see the preview). "
    "**strategy**: `all` (one parameter per block or key), `select` (only the blocks matching "
    "*patterns*), `group` (one parameter per named group: `in: IN*; out: OUT*`), `single` (one "
    "parameter for the whole component), `none` (hold it fixed). **items**: blocks or keys. "
    "**params**: which hyperparameters (default: all of the method's). **fixed** (none only): "
    "`alpha=0.5`.")
BOUNDS_HELP = ("Ranges per hyperparameter (`alpha`) or per generated parameter "
               "(`diffuser.IN04.alpha`); a **fixed** value holds it. Empty cells: defaults ([0, 1]).")


TABLE_COLUMNS = {"loras": fm.LORA_COLUMNS, "fixed": fm.FIXED_COLUMNS, "recipe_sites": fm.SITE_COLUMNS,
                 "strategies": fm.STRATEGY_COLUMNS, "bounds": fm.BOUNDS_COLUMNS, "payloads": fm.PAYLOAD_COLUMNS,
                 "scorers": fm.SCORER_COLUMNS}


@dataclass
class TabContext:
    """What differs between the WebUI and the standalone app."""

    catalog: cat.ModelCatalog
    samplers: Callable[[], list[str]]
    schedulers: Callable[[], list[str]]
    loaded_model_config: Callable[[], str | None] = lambda: None
    output_dir: Callable[[], str] = lambda: "runs"
    storage: Callable[[], str] = lambda: ""
    models_dir: Callable[[], str] = lambda: ""
    standalone: bool = False
    initial: dict[str, Any] = field(default_factory=dict)  # form values to start with
    notice: str = ""  # a warning shown above the Start button (e.g. the queue is off)
    sampler_problems: Callable[[str, str], dict[str, str]] | None = None  # the host's name check


def _form(values) -> dict[str, Any]:
    return dict(zip(fm.FIELDS, values))


def _model_config(ctx: TabContext, form: dict[str, Any]) -> str | None:
    for choice in form.get("models") or []:
        arch = ctx.catalog.architecture(ctx.catalog.path_for(choice))
        if "-" in arch and " " not in arch:
            return arch
    return ctx.loaded_model_config()


def _initial_form(ctx: TabContext) -> dict[str, Any]:
    f = dict(fm.FORM_DEFAULTS)
    f["scorers"] = cat.scorer_rows()
    f["strategies"] = [["diffuser", "all", "", "", "", "", ""], ["clip_l", "single", "", "", "", "", ""]]
    f["payloads"] = [["set0", "a photo of a cat", "", 0, 20, 7.0, "Euler a", "Automatic", 512, 512, 1, 1.0,
                      ""]]
    f.update(ctx.initial)
    if ctx.initial.get("scorers"):  # the set-up's scorers ticked, the others offered unticked
        chosen = {r[0] for r in ctx.initial["scorers"]}
        f["scorers"] = ctx.initial["scorers"] + [r for r in cat.scorer_rows() if r[0] not in chosen]
    return f


def build_tab(manager: Callable[[], RunManager], ctx: TabContext) -> gr.Blocks:
    init = _initial_form(ctx)
    first_arch = _arch_text(ctx, init)
    first_rows, first_method = _method_info(init["method"])
    first_preview, first_yaml = _preview(ctx, init)
    first_scorers = _scorer_text(ctx, init["scorers"], init["models_dir"])
    c: dict[str, Any] = {}  # form field -> component
    errs: dict[str, Any] = {}  # panel -> error Markdown

    def err_box(panel: str):
        errs[panel] = gr.Markdown("", elem_id=f"{P}err_{panel}", elem_classes=[f"{P}error"])

    with gr.Blocks(analytics_enabled=False, elem_id=f"{P}tab") as tab:
        with gr.Row(elem_id=f"{P}layout"):
            # --- set-up ---------------------------------------------------------------------
            with gr.Column(scale=5, elem_id=f"{P}setup"):
                with gr.Accordion("1 · Models", open=True, elem_id=f"{P}panel_models"):
                    with gr.Row():
                        c["models"] = gr.Dropdown(ctx.catalog.titles() + [m for m in init["models"]
                                                                        if m not in ctx.catalog.titles()],
                                                  value=init["models"], multiselect=True,
                                                  label="Checkpoints to merge", elem_id=f"{P}models",
                                                  scale=8)
                        refresh_models = gr.Button("↻", elem_id=f"{P}refresh_models", scale=1,
                                                   min_width=40)
                    arch_md = gr.Markdown(first_arch, elem_id=f"{P}architectures")
                    with gr.Row():
                        c["base_model"] = gr.Dropdown([""] + _names(init, ctx), value=init["base_model"],
                                                      label="Base model (methods that add differences)",
                                                      elem_id=f"{P}base_model")
                        c["host_model"] = gr.Dropdown([""] + _names(init, ctx), value=init["host_model"],
                                                      label="Model to load (default: the first)",
                                                      elem_id=f"{P}host_model", visible=ctx.standalone)
                    c["diffusers_config"] = gr.Textbox(init["diffusers_config"], visible=ctx.standalone,
                                                       label="Diffusers config folder (standalone; "
                                                             "empty: the built-in SD1/SDXL configs)",
                                                       elem_id=f"{P}diffusers_config")
                    c["loras"] = gr.Dataframe(compat.table(init["loras"], 3), headers=fm.LORA_COLUMNS,
                                              datatype=["str", "str", "number"], row_count=(0, "dynamic"),
                                              col_count=(3, "fixed"), type="array", interactive=True,
                                              label="LoRAs merged into a model before the merge "
                                                    "(apply to: a model's name)",
                                              elem_id=f"{P}loras")
                    c["model_names"] = gr.State(init["model_names"])
                    err_box("models")
                with gr.Accordion("2 · Merge method or recipe", open=True, elem_id=f"{P}panel_mode"):
                    c["mode"] = gr.Radio(["merge", "recipe"], value=init["mode"], label="Mode",
                                         elem_id=f"{P}mode")
                    with gr.Group(visible=init["mode"] == "merge") as merge_group:
                        c["method"] = gr.Dropdown(_methods(), value=init["method"], label="Merge method",
                                                  elem_id=f"{P}method")
                        method_md = gr.Markdown(first_method, elem_id=f"{P}method_info")
                        hypers = gr.Dataframe(compat.table(first_rows, 3), headers=["hyperparameter", "type", "default"],
                                              interactive=False, type="array",
                                              label="Its hyperparameters", elem_id=f"{P}hypers")
                        c["fixed"] = gr.Dataframe(compat.table(init["fixed"], 2), headers=fm.FIXED_COLUMNS,
                                                  datatype=["str", "str"], row_count=(0, "dynamic"),
                                                  col_count=(2, "fixed"), type="array", interactive=True,
                                                  label="Fixed values (not tuned)", elem_id=f"{P}fixed")
                    with gr.Group(visible=init["mode"] == "recipe") as recipe_group:
                        with gr.Row():
                            c["recipe_path"] = gr.Dropdown(_recipes(ctx), value=init["recipe_path"],
                                                           allow_custom_value=True,
                                                           label="Recipe (.mecha): pick, type a path",
                                                           elem_id=f"{P}recipe_path", scale=4)
                            recipe_upload = gr.File(file_types=[".mecha"], label="or upload one",
                                                    elem_id=f"{P}recipe_upload", scale=2)
                        c["recipe_sites"] = gr.Dataframe(compat.table(init["recipe_sites"], 5), headers=fm.SITE_COLUMNS,
                                                         datatype=["str", "number", "bool", "number",
                                                                   "number"],
                                                         row_count=(0, "dynamic"), col_count=(5, "fixed"),
                                                         type="array", interactive=True,
                                                         label="Its tunable hyperparameters",
                                                         elem_id=f"{P}recipe_sites")
                        with gr.Row():
                            c["recipe_include"] = gr.Textbox(init["recipe_include"], label="Include patterns",
                                                             elem_id=f"{P}recipe_include")
                            c["recipe_exclude"] = gr.Textbox(init["recipe_exclude"], label="Exclude patterns",
                                                             elem_id=f"{P}recipe_exclude")
                    err_box("mode")
                with gr.Accordion("3 · What to tune (guide)", open=True, elem_id=f"{P}panel_guide"):
                    gr.Markdown(STRATEGY_HELP, elem_classes=[f"{P}help"])
                    c["strategies"] = gr.Dataframe(compat.table(init["strategies"], 7), headers=fm.STRATEGY_COLUMNS,
                                                   datatype=["str"] * 7, row_count=(0, "dynamic"),
                                                   col_count=(7, "fixed"), type="array", interactive=True,
                                                   label="Strategies", elem_id=f"{P}strategies")
                    gr.Markdown(BOUNDS_HELP, elem_classes=[f"{P}help"])
                    c["bounds"] = gr.Dataframe(compat.table(init["bounds"], 7), headers=fm.BOUNDS_COLUMNS,
                                               datatype=["str", "number", "number", "bool", "number", "str",
                                                         "str"],
                                               row_count=(0, "dynamic"), col_count=(7, "fixed"), type="array",
                                               interactive=True, label="Bounds", elem_id=f"{P}bounds")
                    c["blocks"] = gr.Textbox(init["blocks"], label="Block config (empty: the model's "
                                             "supermerger blocks)", elem_id=f"{P}blocks")
                    preview_md = gr.Markdown(first_preview, elem_id=f"{P}preview")
                    with gr.Accordion("YAML view", open=False, elem_id=f"{P}guide_yaml_panel"):
                        guide_code = gr.Code(first_yaml, language="yaml", label="guide (edit, then Apply)",
                                             elem_id=f"{P}guide_yaml")
                        apply_yaml = gr.Button("Apply YAML", elem_id=f"{P}apply_guide_yaml")
                    err_box("guide")
                with gr.Accordion("4 · Prompt sets", open=False, elem_id=f"{P}panel_payloads"):
                    c["payloads"] = gr.Dataframe(compat.table(init["payloads"], 13), headers=fm.PAYLOAD_COLUMNS,
                                                 datatype=["str", "str", "str", "number", "number",
                                                           "number", "str", "str", "number", "number",
                                                           "number", "number", "str"],
                                                 row_count=(0, "dynamic"), col_count=(13, "fixed"),
                                                 type="array", interactive=True, wrap=True,
                                                 label="Prompt sets (scorers: empty for all)",
                                                 elem_id=f"{P}payloads")
                    with gr.Accordion("Add a prompt set", open=False, elem_id=f"{P}add_payload_panel"):
                        png = gr.File(file_types=[".png", ".jpg", ".jpeg", ".webp"],
                                      label="Drop an image made by the WebUI: its parameters fill the fields",
                                      elem_id=f"{P}png")
                        add_prompt = gr.Textbox(label="Prompt", lines=2, elem_id=f"{P}add_prompt")
                        add_negative = gr.Textbox(label="Negative prompt", elem_id=f"{P}add_negative")
                        with gr.Row():
                            add_sampler = gr.Dropdown(ctx.samplers(), value=_first(ctx.samplers(), "Euler a"),
                                                      label="Sampler", elem_id=f"{P}add_sampler")
                            add_scheduler = gr.Dropdown(ctx.schedulers(), value=_first(ctx.schedulers(),
                                                                                       "Automatic"),
                                                        label="Schedule type", elem_id=f"{P}add_scheduler")
                        with gr.Row():
                            add_seed = gr.Number(0, precision=0, label="Seed", elem_id=f"{P}add_seed")
                            add_steps = gr.Number(20, precision=0, label="Steps", elem_id=f"{P}add_steps")
                            add_cfg = gr.Number(7.0, label="CFG scale", elem_id=f"{P}add_cfg")
                            add_width = gr.Number(512, precision=0, label="Width", elem_id=f"{P}add_width")
                            add_height = gr.Number(512, precision=0, label="Height", elem_id=f"{P}add_height")
                            add_images = gr.Number(1, precision=0, label="Images", elem_id=f"{P}add_images")
                        add_button = gr.Button("Add to the prompt sets", elem_id=f"{P}add_payload")
                    c["wildcards_dir"] = gr.Textbox(init["wildcards_dir"], label="Wildcards folder "
                                                    "(__name__ in prompts; empty: none)",
                                                    elem_id=f"{P}wildcards_dir")
                    err_box("payloads")
                with gr.Accordion("5 · Scorers", open=False, elem_id=f"{P}panel_scorers"):
                    c["scorers"] = gr.Dataframe(compat.table(init["scorers"], 4), headers=fm.SCORER_COLUMNS,
                                                datatype=["str", "bool", "number", "str"],
                                                row_count=(0, "dynamic"), col_count=(4, "fixed"), type="array",
                                                interactive=True, label="Scorers (tick the ones to use; "
                                                "options: `folder: refs, sharpness: 2`)",
                                                elem_id=f"{P}scorers")
                    with gr.Row():
                        c["scorer_mean"] = gr.Dropdown(list(_means()), value=init["scorer_mean"],
                                                       label="Average over scorers", elem_id=f"{P}scorer_mean")
                        c["payload_mean"] = gr.Dropdown(list(_means()), value=init["payload_mean"],
                                                        label="Average over prompt sets",
                                                        elem_id=f"{P}payload_mean")
                    c["models_dir"] = gr.Textbox(init["models_dir"], label="Scorer models folder "
                                                 f"(empty: {ctx.models_dir() or 'none'})",
                                                 elem_id=f"{P}models_dir")
                    toggle_manual = gr.Button("Rating by hand on / off (key M)", elem_id=f"{P}toggle_manual")
                    scorer_md = gr.Markdown(first_scorers, elem_id=f"{P}scorer_status")
                    err_box("scorers")
                with gr.Accordion("6 · Optimizer", open=False, elem_id=f"{P}panel_optimizer"):
                    with gr.Row():
                        c["sampler"] = gr.Dropdown(list(_samplers()), value=init["sampler"],
                                                   label="Optuna sampler", elem_id=f"{P}sampler")
                        c["trials"] = gr.Number(init["trials"], precision=0, label="Trials",
                                                elem_id=f"{P}trials")
                        c["seed"] = gr.Textbox(str(init["seed"]), label="Seed (empty: random)",
                                               elem_id=f"{P}seed")
                    with gr.Row():
                        apply_live = gr.Button("Apply trials and early stopping to the live run",
                                               elem_id=f"{P}apply_live")
                        apply_md = gr.Markdown("", elem_id=f"{P}apply_status")
                    c["sampler_options"] = gr.Textbox(init["sampler_options"],
                                                      label="Sampler options (`n_startup_trials: 4`)",
                                                      elem_id=f"{P}sampler_options")
                    with gr.Row():
                        c["patience"] = gr.Number(init["patience"], precision=0,
                                                  label="Early stop after N trials without gain (0: off)",
                                                  elem_id=f"{P}patience")
                        c["min_improvement"] = gr.Number(init["min_improvement"], label="Minimum gain",
                                                         elem_id=f"{P}min_improvement")
                    with gr.Row():
                        c["baseline"] = gr.CheckboxGroup(["defaults", "midpoint"], value=init["baseline"],
                                                         label="Baseline trials first", elem_id=f"{P}baseline")
                        c["score_inputs"] = gr.Checkbox(init["score_inputs"], label="Score the input models",
                                                        elem_id=f"{P}score_inputs")
                        c["on_trial_error"] = gr.Radio(["continue", "stop"], value=init["on_trial_error"],
                                                       label="When a trial fails", elem_id=f"{P}on_trial_error")
                    with gr.Row():
                        c["study"] = gr.Textbox(init["study"], label="Study name (empty: method + models)",
                                                elem_id=f"{P}study")
                        c["storage"] = gr.Textbox(init["storage"], label="Storage URL (empty: "
                                                  f"{ctx.storage() or 'SQLite in the run folder'})",
                                                  elem_id=f"{P}storage")
                    with gr.Row():
                        c["start_as"] = gr.Radio(list(fm.START_AS), value=init["start_as"], label="Start as",
                                                 elem_id=f"{P}start_as")
                        c["source_study"] = gr.Dropdown(cat.study_choices(ctx.output_dir(), ctx.storage()),
                                                        value=None, allow_custom_value=True,
                                                        label="Study to resume or fork",
                                                        elem_id=f"{P}source_study", scale=3)
                        refresh_studies = gr.Button("↻", elem_id=f"{P}refresh_studies", min_width=40, scale=0)
                    with gr.Row():
                        c["keep_best"] = gr.Checkbox(init["keep_best"], label="Keep the best merge loaded",
                                                     elem_id=f"{P}keep_best")
                        c["save_best"] = gr.Checkbox(init["save_best"], label="Save the best as a checkpoint",
                                                     elem_id=f"{P}save_best")
                        c["save_name"] = gr.Textbox(init["save_name"], label="Checkpoint name",
                                                    elem_id=f"{P}save_name")
                    with gr.Row():
                        c["output_dir"] = gr.Textbox(init["output_dir"], label="Run folder (empty: "
                                                     f"{ctx.output_dir()})", elem_id=f"{P}output_dir")
                        c["device"] = gr.Textbox(init["device"], label="Device (empty: auto)",
                                                 elem_id=f"{P}device", visible=ctx.standalone)
                    err_box("optimizer")
                with gr.Accordion("Config file", open=False, elem_id=f"{P}panel_file"):
                    with gr.Row():
                        load_file = gr.File(file_types=[".yaml", ".yml"], label="Load a run config",
                                            elem_id=f"{P}load_config")
                        save_button = gr.Button("Save the set-up as YAML", elem_id=f"{P}save_config")
                    saved_file = gr.File(label="Run config", interactive=False, elem_id=f"{P}saved_config")
                    file_md = gr.Markdown("", elem_id=f"{P}file_status")

            # --- running --------------------------------------------------------------------
            with gr.Column(scale=7, elem_id=f"{P}live"):
                if ctx.notice:
                    gr.Markdown(f"⚠ {ctx.notice}", elem_id=f"{P}notice", elem_classes=[f"{P}error"])
                with gr.Row(elem_id=f"{P}bar"):
                    start = gr.Button("Start", variant="primary", elem_id=f"{P}start")
                    stop = gr.Button("Stop", elem_id=f"{P}stop")
                    pause = gr.Button("Pause", elem_id=f"{P}pause")
                    resume = gr.Button("Resume", elem_id=f"{P}resume")
                    check = gr.Button("Check set-up", elem_id=f"{P}check")
                    # clicked by javascript/sd_optim.js when the page loads: shows the live (or last)
                    # run again after a reload or in a second browser tab
                    attach = gr.Button("Show the live run", elem_id=f"{P}attach", elem_classes=[f"{P}hidden"])
                gr.Markdown("Keys (while no text field has the focus): **S** stop · **P** pause / resume · "
                            "**M** rating by hand on / off · **1**–**9**, **0** rate the image waiting (0 = 10)",
                            elem_id=f"{P}keys", elem_classes=[f"{P}help"])
                status = gr.Markdown("Set up the run on the left, then press Start.", elem_id=f"{P}status")
                with gr.Group(visible=False, elem_id=f"{P}rate") as rate_group:  # the manual scorer's
                    rate_md = gr.Markdown("", elem_id=f"{P}rate_caption")
                    rate_image = gr.Image(type="pil", interactive=False, show_label=False, height=256,
                                          elem_id=f"{P}rate_image")
                    with gr.Row():
                        rate_buttons = [gr.Button(str(k), elem_id=f"{P}rate_{k}", min_width=36)
                                        for k in range(1, 11)]
                    with gr.Row():
                        rate_skip = gr.Button("Skip image", elem_id=f"{P}rate_skip")
                        rate_value = gr.Number(5, precision=0, label="Rating for the whole trial",
                                               elem_id=f"{P}rate_value")
                        rate_trial = gr.Button("Rate the whole trial", elem_id=f"{P}rate_trial")
                gallery = gr.Gallery(label="Current trial", columns=4, height=300, object_fit="contain",
                                     preview=False, elem_id=f"{P}gallery")
                with gr.Tabs(elem_id=f"{P}tabs"):
                    with gr.Tab("Best so far", elem_id=f"{P}tab_best"), gr.Row():
                        best_gallery = gr.Gallery(label="Best trial", columns=3, height=220,
                                                  object_fit="contain", elem_id=f"{P}best_gallery")
                        best_md = gr.Markdown("No trial yet.", elem_id=f"{P}best")
                    with gr.Tab("Trials", elem_id=f"{P}tab_trials"):
                        trials = gr.Dataframe(compat.table([], 5), headers=views.TRIAL_COLUMNS, type="array", interactive=False,
                                              wrap=True, label="Trials (click one to pick it in Results)",
                                              elem_id=f"{P}trials_table")
                    with gr.Tab("Plots", elem_id=f"{P}tab_plots"):
                        plots = _plot_components()
                    with gr.Tab("Results", elem_id=f"{P}tab_results"):
                        with gr.Row():
                            trial_box = gr.Textbox("", label="Trial (empty: the best)", elem_id=f"{P}trial")
                            ckpt_name = gr.Textbox("", label="Checkpoint name (empty: <study>-trial<N>)",
                                                   elem_id=f"{P}ckpt_name")
                        with gr.Row():
                            recipe_button = gr.Button("Recipe (.mecha)", elem_id=f"{P}get_recipe")
                            save_ckpt = gr.Button("Save as checkpoint", elem_id=f"{P}save_ckpt")
                            keep = gr.Button("Keep loaded", elem_id=f"{P}keep")
                            look = gr.Button("Look again", elem_id=f"{P}look")
                        recipe_file = gr.File(label="Recipe", interactive=False, elem_id=f"{P}recipe_file")
                        result_md = gr.Markdown("", elem_id=f"{P}result_status")
                        look_gallery = gr.Gallery(label="The trial again (the original model is restored "
                                                  "after)", columns=4, height=220, object_fit="contain",
                                                  elem_id=f"{P}look_gallery")

        fields = [c[k] for k in fm.FIELDS]
        panels = [errs[p] for p in fm.PANELS]

        # --- set-up handlers ------------------------------------------------------------------
        def on_models(*values):
            form = _form(values)
            names = [""] + _names(form, ctx)
            base = form["base_model"] if form["base_model"] in names else ""
            host = form["host_model"] if form["host_model"] in names else ""
            return (_arch_text(ctx, form), gr.update(choices=names, value=base),
                    gr.update(choices=names, value=host))

        c["models"].change(on_models, fields, [arch_md, c["base_model"], c["host_model"]])

        def on_refresh_models(chosen):
            titles = ctx.catalog.refresh()
            return gr.update(choices=titles + [m for m in chosen or [] if m not in titles])

        refresh_models.click(on_refresh_models, [c["models"]], [c["models"]])

        def on_mode(mode):
            return gr.update(visible=mode == "merge"), gr.update(visible=mode == "recipe")

        c["mode"].change(on_mode, [c["mode"]], [merge_group, recipe_group])

        def on_method(method):
            rows, text = _method_info(method)
            return gr.update(value=compat.table(rows, 3)), text

        c["method"].change(on_method, [c["method"]], [hypers, method_md])

        def on_recipe_path(path, table, include, exclude):
            if not path:
                return gr.update(value=compat.table([], 5)), ""
            try:
                sites = cat.recipe_sites(str(path))
            except (OSError, ValueError) as e:
                return gr.update(value=compat.table([], 5)), f"- ⚠ recipe.path: {e}"
            # rows the table already has for these sites (a loaded config's ticks and bounds) stay
            known = {str(r[0]): r for r in fm.filled_rows(compat.table_rows(table))}
            names = [name for name, _ in sites]
            tuned = set(fm.selected_sites(names, fm.words(include) or ["*"], fm.words(exclude)))
            rows = [[name, value, *(known[name][2:5] if name in known else [name in tuned, "", ""])]
                    for name, value in sites]
            return gr.update(value=compat.table(rows, 5)), ""

        c["recipe_path"].change(on_recipe_path, [c["recipe_path"], c["recipe_sites"], c["recipe_include"],
                                                 c["recipe_exclude"]], [c["recipe_sites"], errs["mode"]])

        def on_patterns(table, include, exclude):
            rows = fm.filled_rows(compat.table_rows(table))
            if not rows:
                return gr.update()
            tuned = set(fm.selected_sites([str(r[0]) for r in rows], fm.words(include) or ["*"],
                                           fm.words(exclude)))
            return compat.table([[r[0], r[1], str(r[0]) in tuned, *r[3:5]] for r in rows], 5)

        for key in ("recipe_include", "recipe_exclude"):
            c[key].change(on_patterns, [c["recipe_sites"], c["recipe_include"], c["recipe_exclude"]],
                          [c["recipe_sites"]])

        def on_recipe_upload(upload):
            path = compat.file_path(upload)
            if not path:
                return gr.update()
            target = Path(ctx.output_dir()).expanduser() / "recipes" / Path(path).name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)  # the upload's temp file goes away with the session
            return gr.update(choices=_recipes(ctx), value=str(target))

        recipe_upload.upload(on_recipe_upload, [recipe_upload], [c["recipe_path"]])

        def on_preview(*values):
            return _preview(ctx, _form(values))

        for key in ("models", "mode", "method", "fixed", "strategies", "bounds", "blocks", "recipe_path",
                    "recipe_sites", "recipe_include", "recipe_exclude", "base_model"):
            c[key].change(on_preview, fields, [preview_md, guide_code])

        def on_apply_yaml(text):
            try:
                guide = safe_yaml.load(text or "", "guide") or {}
                if isinstance(guide, dict) and set(guide) == {"guide"}:
                    guide = guide["guide"]
                new = fm.guide_to_form(guide)
            except ConfigError as e:
                problems = e.problems
                return [gr.update()] * 5 + [views.problems_markdown(problems)]
            return [compat.table(new["strategies"], 7), compat.table(new["bounds"], 7), new["blocks"],
                    new["recipe_include"], new["recipe_exclude"], ""]

        apply_yaml.click(on_apply_yaml, [guide_code], [c["strategies"], c["bounds"], c["blocks"], c["recipe_include"],
                                                       c["recipe_exclude"], errs["guide"]])

        def on_png(upload):
            from .infotext import prompt_set_from_png

            path = compat.file_path(upload)
            if not path:
                return [gr.update()] * 10 + [""]
            try:
                p = prompt_set_from_png(path)
            except (OSError, ValueError) as e:
                return [gr.update()] * 10 + [f"- ⚠ payloads: {e}"]
            samplers = ctx.samplers()
            return [p.get("prompt", gr.update()), p.get("negative_prompt", ""),
                    gr.update(value=p["sampler"], choices=_with(samplers, p["sampler"]))
                    if "sampler" in p else gr.update(),
                    gr.update(value=p["scheduler"], choices=_with(ctx.schedulers(), p["scheduler"]))
                    if "scheduler" in p else gr.update(),
                    p.get("seed", gr.update()), p.get("steps", gr.update()), p.get("cfg_scale", gr.update()),
                    p.get("width", gr.update()), p.get("height", gr.update()), 1, ""]

        add_fields = [add_prompt, add_negative, add_sampler, add_scheduler, add_seed, add_steps, add_cfg,
                      add_width, add_height, add_images]
        png.upload(on_png, [png], [*add_fields, errs["payloads"]])

        def on_add(table, prompt, negative, sampler, scheduler, seed, steps, cfg, width, height, images):
            rows = fm.filled_rows(compat.table_rows(table))
            names = {str(r[0]) for r in rows}
            n = len(rows)
            while f"set{n}" in names:
                n += 1
            rows.append([f"set{n}", prompt or "", negative or "", seed, steps, cfg, sampler or "",
                         scheduler or "", width, height, images, 1.0, ""])
            return rows

        add_button.click(on_add, [c["payloads"], *add_fields], [c["payloads"]])

        def on_scorers(table, models_dir):
            return _scorer_text(ctx, compat.table_rows(table), models_dir)

        c["scorers"].change(on_scorers, [c["scorers"], c["models_dir"]], [scorer_md])

        def on_toggle_manual(table):
            rows = fm.filled_rows(compat.table_rows(table))
            if not any(str(r[0]) == "manual" for r in rows):
                rows.append(["manual", False, 1.0, ""])
            rows = [[r[0], not fm.is_ticked(r[1]) if str(r[0]) == "manual" else r[1], *r[2:]] for r in rows]
            return compat.table(rows, 4)

        toggle_manual.click(on_toggle_manual, [c["scorers"]], [c["scorers"]])
        c["models_dir"].change(on_scorers, [c["scorers"], c["models_dir"]], [scorer_md])

        def on_refresh_studies(output_dir, storage):
            return gr.update(choices=cat.study_choices(output_dir or ctx.output_dir(), storage or ctx.storage()))

        refresh_studies.click(on_refresh_studies, [c["output_dir"], c["storage"]], [c["source_study"]])

        def on_load(upload):
            path = compat.file_path(upload)
            if not path:
                return [gr.update()] * len(fields) + [""]
            try:
                data = safe_yaml.load(Path(path).read_text(encoding="utf-8"), "config file")
                new = fm.data_to_form(data if isinstance(data, dict) else {}, ctx.catalog.title_for,
                                      cat.recipe_sites)
            except (OSError, ValueError) as e:  # ConfigError and bad text are ValueErrors
                problems = e.problems if isinstance(e, ConfigError) else [f"config file: {e}"]
                return [gr.update()] * len(fields) + [views.problems_markdown(problems)]
            new["scorers"] = new["scorers"] + [r for r in cat.scorer_rows()
                                               if r[0] not in {s[0] for s in new["scorers"]}]
            updates = []
            for key in fm.FIELDS:
                if key == "models":
                    titles = ctx.catalog.titles()
                    updates.append(gr.update(choices=titles + [m for m in new[key] if m not in titles],
                                             value=new[key]))
                elif key == "seed":
                    updates.append(str(new[key]))
                elif isinstance(fm.FORM_DEFAULTS[key], list) and key not in ("baseline",):
                    updates.append(compat.table(new[key], len(TABLE_COLUMNS[key])))
                else:
                    updates.append(new[key])
            return updates + [f"Loaded {Path(path).name}."]

        load_file.upload(on_load, [load_file], [*fields, file_md])

        def on_save(*values):
            form = _form(values)
            data = fm.form_to_data(form, ctx.catalog.path_for)
            out = Path(ctx.output_dir()).expanduser() / "configs"
            out.mkdir(parents=True, exist_ok=True)
            path = out / f"sd-optim-{time.strftime('%Y%m%d-%H%M%S')}.yaml"
            path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
            try:
                read_config(data)
                note = f"Saved {path}."
            except ConfigError as e:
                note = f"Saved {path}; it does not validate yet:\n" + views.problems_markdown(e.problems)
            return str(path), note

        save_button.click(on_save, fields, [saved_file, file_md])

        # --- running handlers -----------------------------------------------------------------
        rate_outputs = [rate_group, rate_image, rate_md]
        live_outputs = [status, gallery, best_gallery, best_md, trials, *plots, recipe_file, *rate_outputs]

        def rating_view(state: dict[str, Any]) -> list[Any]:
            waiting = manager().waiting_for_ratings()
            if not waiting:
                state["rating"] = None
                return [gr.update(visible=False), gr.update(), ""]
            _position, item, trial = waiting[0]
            shown = id(item) == state.get("rating")
            state["rating"] = id(item)
            which = f"trial {trial}" if trial >= 0 else "an input model"  # score_inputs' reference rows
            text = (f"**Rate {which} · {item.payload} #{item.index}** (1–10, keys 1–9 and 0 for 10): "
                    f"{len(waiting)} image{'s' if len(waiting) != 1 else ''} of this prompt set to rate")
            return [gr.update(visible=True), gr.update() if shown else item.image, text]
        kind = compat.plot_kind()

        def live_view(state: dict[str, Any]) -> list[Any]:
            m = manager()
            live = m.current
            run = live.runner.state if live is not None else None
            study = run.study if run is not None else None
            status = m.status()
            text = views.status_markdown(status)
            done = state.get("done", -1)
            # the run's own count, not the study's trials: polled several times a second, reading
            # every trial of a long study each time would cost more than the trials themselves
            trials_done = status.get("trials_done", 0)
            images = list(live.images) if live is not None else []
            best_images = list(live.best_images) if live is not None else []
            out: list[Any] = [text]
            out.append(images if _ids(images) != state.get("images") else gr.update())
            out.append(best_images if _ids(best_images) != state.get("best") else gr.update())
            state["images"], state["best"] = _ids(images), _ids(best_images)
            if trials_done != done:
                state["done"] = trials_done
                out += [views.best_markdown(study), compat.table(views.trial_rows(study), 5)]
                out += _figures(study, kind)
            else:
                out += [gr.update()] * (2 + len(plots))
            finished = live is not None and live.finished is not None and live.finished.best_recipe
            out.append(live.finished.best_recipe if finished else gr.update())
            return out + rating_view(state)

        def follow(state: dict[str, Any] | None = None):
            state = state if state is not None else {}
            m = manager()
            seen = -1
            while True:
                seen = m.wait_for_change(seen, 1.0)
                alive = m.live  # read before the view, so the last view shown is the final one
                yield live_view(state)
                if not alive:
                    return
                time.sleep(0.25)  # at most a few updates a second, however fast events arrive

        def on_start(*values):
            form = _form(values)
            data = fm.form_to_data(form, ctx.catalog.path_for)
            clear = [""] * len(panels)
            try:
                manager().start(data, fresh_name=True, **fm.start_options(form))
            except RunBusy as e:
                yield [*clear, str(e), *[gr.update()] * (len(live_outputs) - 1)]
                if manager().live:  # a run started elsewhere (another tab, the API): follow it
                    for view in follow():
                        yield [*clear, *view]
                return
            except ConfigError as e:
                by_panel = fm.problems_by_panel(e.problems)
                boxes = [views.problems_markdown(by_panel[p]) for p in fm.PANELS]
                other = by_panel["other"]
                head = "**The run did not start.** Fix the problems marked in the set-up panels."
                text = head + ("\n" + views.problems_markdown(other) if other else "")
                yield [*boxes, text, *[gr.update()] * (len(live_outputs) - 1)]
                return
            except Exception as e:
                log.exception("sd-optim: the run could not start")
                yield [*clear, f"**The run could not start:** {type(e).__name__}: {e}",
                       *[gr.update()] * (len(live_outputs) - 1)]
                return
            for view in follow():
                yield [*clear, *view]

        start.click(on_start, fields, [*panels, *live_outputs], show_progress="hidden", **compat.unlimited())

        def on_attach():
            if manager().current is None:
                yield [gr.update()] * len(live_outputs)
                return
            yield from follow()

        attach.click(on_attach, [], live_outputs, show_progress="hidden", **compat.unlimited())

        def on_check(*values):
            form = _form(values)
            data = fm.form_to_data(form, ctx.catalog.path_for)
            problems = cat.check_setup(data, manager().defaults, _model_config(ctx, form), ctx.sampler_problems)
            by_panel = fm.problems_by_panel(problems)
            boxes = [views.problems_markdown(by_panel[p]) for p in fm.PANELS]
            if not problems:
                return [*boxes, "The set-up is complete: press Start."]
            return [*boxes, "**Fix the problems marked in the set-up panels.**"
                    + ("\n" + views.problems_markdown(by_panel["other"]) if by_panel["other"] else "")]

        check.click(on_check, fields, [*panels, status])

        def rate_with(value, whole_trial=False):
            def handler(*args):
                given = args[0] if whole_trial else value
                try:
                    manager().rate(int(given) if given != "skip" else given, whole_trial=whole_trial)
                except (TypeError, ValueError) as e:
                    return [gr.update(), gr.update(), f"⚠ {e}"]
                return rating_view({})
            return handler

        for k, button in enumerate(rate_buttons, start=1):
            button.click(rate_with(k), [], rate_outputs, queue=False)
        rate_skip.click(rate_with("skip"), [], rate_outputs, queue=False)
        rate_trial.click(rate_with(None, whole_trial=True), [rate_value], rate_outputs, queue=False)

        def on_pause():
            return views.status_markdown(manager().pause())

        def on_resume():
            return views.status_markdown(manager().resume())

        pause.click(on_pause, [], [status], queue=False)
        resume.click(on_resume, [], [status], queue=False)

        def on_apply_live(*values):
            form = _form(values)
            try:
                lines = manager().adjust(fm.form_to_data(form, ctx.catalog.path_for))
            except ConfigError as e:
                return views.problems_markdown(e.problems)
            return "Applied to the live run: " + "; ".join(lines) + "."

        apply_live.click(on_apply_live, fields, [apply_md], queue=False)

        def on_stop():
            return views.status_markdown(manager().stop("stopped from the tab")) or "Stopping…"

        stop.click(on_stop, [], [status], queue=False)

        # --- results handlers ------------------------------------------------------------------
        def trial_number(tools, text) -> int:
            text = str(text or "").strip().lstrip("#")
            if not text:
                return tools.best_number()
            try:
                return int(text)
            except ValueError:
                raise ConfigError([Problem("trial", "give a trial number", text)]) from None

        def guarded(fn):
            def run(*args):
                try:
                    return fn(*args)
                except RunBusy as e:
                    return gr.update(), f"{e}. Stop it (or wait for it) first."
                except ConfigError as e:
                    return gr.update(), views.problems_markdown(e.problems)
                except Exception as e:  # the tab's boundary: show it, keep the WebUI up
                    log.exception("sd-optim: %s failed", fn.__name__)
                    return gr.update(), f"{fn.__name__} failed: {type(e).__name__}: {e}"
            return run

        def recipe_action(text):
            tools = manager().trial_tools()
            number = trial_number(tools, text)
            path = tools.recipe_file(number)
            return str(path), f"Recipe of trial {number}: `{path}`"

        def save_action(text, name):
            with manager().trial_action("saving a checkpoint") as tools:
                number = trial_number(tools, text)
                path = tools.save_checkpoint(number, str(name or "").strip())
            return gr.update(), f"Saved trial {number} as `{path}`"

        def keep_action(text):
            with manager().trial_action("keeping a trial loaded") as tools:
                kept = tools.keep(trial_number(tools, text))
            until = ("the next run starts from the model file's own weights again" if ctx.standalone else
                     "loading another checkpoint (or reloading this one) brings the original back")
            return gr.update(), f"Trial {kept.trial} is loaded now (value {kept.value:.4f}); {until}."

        recipe_button.click(guarded(recipe_action), [trial_box], [recipe_file, result_md])
        save_ckpt.click(guarded(save_action), [trial_box, ckpt_name], [recipe_file, result_md])
        keep.click(guarded(keep_action), [trial_box], [recipe_file, result_md])

        def on_look(text):
            try:
                with manager().trial_action("looking at a trial again") as tools:
                    number = trial_number(tools, text)
                    images = []
                    for payload, g in tools.look(number):
                        images.append((g.image, f"{payload} · seed {g.seed}"))
                        yield images, f"Trial {number}: {len(images)} images so far…"
                count = f"{len(images)} image{'s' if len(images) != 1 else ''}"
                yield images, f"Trial {number} again ({count}); the original model is back."
            except RunBusy as e:
                yield gr.update(), f"{e}. Stop it (or wait for it) first."
            except ConfigError as e:
                yield gr.update(), views.problems_markdown(e.problems)
            except Exception as e:  # the tab's boundary: show it, keep the WebUI up
                log.exception("sd-optim: look again failed")
                yield gr.update(), f"Look again failed: {type(e).__name__}: {e}"

        look.click(on_look, [trial_box], [look_gallery, result_md], **compat.unlimited())

        def on_select_trial(table, evt: gr.SelectData):
            rows = compat.table_rows(table)
            row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
            try:
                return str(int(rows[row][0]))
            except (IndexError, TypeError, ValueError):
                return gr.update()

        trials.select(on_select_trial, [trials], [trial_box])
    return tab


def _arch_text(ctx: TabContext, form: dict[str, Any]) -> str:
    lines = []
    for choice in form.get("models") or []:
        path = ctx.catalog.path_for(choice)
        lines.append(f"- `{_display_name(form, path)}`: {ctx.catalog.architecture(path)}")
    return "\n".join(lines)


def _method_info(method: str) -> tuple[list[list[Any]], str]:
    rows, inputs = cat.method_rows(method)
    needs = " · needs a **base model**" if cat.method_needs_base(method) else ""
    return rows, f"{method}: {inputs}{needs}"


def _preview(ctx: TabContext, form: dict[str, Any]) -> tuple[str, str]:
    data = fm.form_to_data(form, ctx.catalog.path_for)
    lines, problems = cat.preview(data, _model_config(ctx, form))
    return views.preview_markdown(lines, problems), views.guide_yaml(data)


def _scorer_text(ctx: TabContext, rows: list[list[Any]], models_dir: str) -> str:
    data = fm.form_to_data({"scorers": rows})
    lines = cat.scorer_status(data["scorers"], models_dir or ctx.models_dir())
    if not lines:
        return "No scorer ticked: tick at least one."
    return "\n".join(f"- {line}" for line in lines)


def _ids(images: list[Any]) -> list[int]:
    return [id(i) for i in images]


def _plot_components() -> list[Any]:
    from .plots import PLOT_NAMES

    out = []
    names = list(PLOT_NAMES.items()) if isinstance(PLOT_NAMES, dict) else list(PLOT_NAMES)
    for i in range(0, len(names), 2):
        with gr.Row():
            for key, label in names[i:i + 2]:
                out.append(gr.Plot(label=label, elem_id=f"{P}plot_{key}"))
    return out


def _figures(study, kind: str) -> list[Any]:
    from .plots import PLOT_NAMES, study_plots

    keys = list(PLOT_NAMES) if isinstance(PLOT_NAMES, dict) else [k for k, _ in PLOT_NAMES]
    if study is None:
        return [None] * len(keys)
    figures = study_plots(study, kind=kind)
    return [figures.get(k) for k in keys]


def _names(form: dict[str, Any], ctx: TabContext) -> list[str]:
    data = fm.form_to_data({"models": form.get("models") or [], "model_names": form.get("model_names") or {}},
                           ctx.catalog.path_for)
    return [m["name"] for m in data["models"]]


def _display_name(form: dict[str, Any], path: str) -> str:
    return (form.get("model_names") or {}).get(path) or Path(path).stem


def _methods() -> list[str]:
    from ..search.methods import list_methods

    return list_methods()


def _means():
    from ..config import MEANS

    return MEANS


def _samplers():
    from ..config import SAMPLERS

    return SAMPLERS


def _recipes(ctx: TabContext) -> list[str]:
    root = Path(ctx.output_dir()).expanduser()
    if not root.is_dir():
        return []
    found = sorted(root.glob("recipes/*.mecha")) + sorted(root.glob("*/best.mecha"))
    return [str(p) for p in found][:200]


def _first(options: list[str], preferred: str) -> str | None:
    return preferred if preferred in options else (options[0] if options else None)


def _with(options: list[str], value: str) -> list[str]:
    return options if value in options else [*options, value]
