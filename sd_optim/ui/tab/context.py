"""What the tab's panels and handlers share: the host's side of the tab (:class:`TabContext`), the
form's starting values, and the texts the panels compute from the form. No component here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import catalog as cat
from .. import form as fm
from .. import views

PREFIX = "sd_optim_"  # the one prefix of element ids and CSS classes


def elem(name: str) -> str:
    """The element id (or CSS class) ``name`` gets on the page."""
    return PREFIX + name


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


FIRST_PROMPT = "a photo of a cat"  # the first prompt set's prompt, so that a first run needs no typing


def form_of(values: tuple[Any, ...] | list[Any]) -> dict[str, Any]:
    """The set-up controls' values (gradio passes them in :data:`form.FIELDS` order) by field."""
    return dict(zip(fm.FIELDS, values))


def initial_form(ctx: TabContext) -> dict[str, Any]:
    """The values the set-up controls start with: the config's defaults, then the host's own."""
    form = dict(fm.FORM_DEFAULTS)
    form["scorers"] = []
    form["strategies"] = [["diffuser", "all", "", "", "", "", ""], ["clip_l", "single", "", "", "", "", ""]]
    form["payloads"] = [fm.payload_row(fm.payload_defaults("set0", FIRST_PROMPT))]
    form.update(ctx.initial)
    form["scorers"] = with_all_scorers(form["scorers"], form["models_dir"] or ctx.models_dir())
    return form


def with_all_scorers(rows: list[list[Any]], models_dir: str) -> list[list[Any]]:
    """The scorer table's rows, then a row for each scorer offered here that they do not name
    (unticked beside the set-up's own)."""
    named = set(fm.scorer_names(rows))
    return [*rows, *(r for r in cat.scorer_rows(models_dir) if r[0] not in named)]


def model_config(ctx: TabContext, form: dict[str, Any]) -> str | None:
    """The sd-mecha model config of the first chosen checkpoint that names one, else the loaded one's."""
    for choice in form.get("models") or []:
        arch = ctx.catalog.architecture(ctx.catalog.path_for(choice))
        if "-" in arch and " " not in arch:
            return arch
    return ctx.loaded_model_config()


def model_names(ctx: TabContext, form: dict[str, Any]) -> list[str]:
    """The names the config gives the chosen checkpoints (what base_model / host_model name)."""
    data = fm.form_to_data({"models": form.get("models") or [], "model_names": form.get("model_names") or {}},
                           ctx.catalog.path_for)
    return [m["name"] for m in data["models"]]


def architectures_text(ctx: TabContext, form: dict[str, Any]) -> str:
    lines = []
    for choice in form.get("models") or []:
        path = ctx.catalog.path_for(choice)
        shown = (form.get("model_names") or {}).get(path) or Path(path).stem
        lines.append(f"- `{shown}`: {ctx.catalog.architecture(path)}")
    return "\n".join(lines)


def method_info(method: str) -> tuple[list[list[Any]], str]:
    """(the method's hyperparameter rows, its one-line description)."""
    rows, inputs = cat.method_rows(method)
    needs = " · needs a **base model**" if cat.method_needs_base(method) else ""
    return rows, f"{method}: {inputs}{needs}"


def preview(ctx: TabContext, form: dict[str, Any]) -> tuple[str, str]:
    """(the parameter preview, the guide's YAML view) of the set-up."""
    data = fm.form_to_data(form, ctx.catalog.path_for)
    lines, problems = cat.preview(data, model_config(ctx, form))
    return views.preview_markdown(lines, problems), views.guide_yaml(data)


def scorer_text(ctx: TabContext, rows: list[list[Any]], ticked: list[str], models_dir: str) -> str:
    data = fm.form_to_data({"scorers": rows, "scorer_use": ticked})
    lines = cat.scorer_status(data["scorers"], models_dir or ctx.models_dir())
    if not lines:
        return "No scorer ticked: tick at least one."
    return "\n".join(f"- {line}" for line in lines)


def model_choices(ctx: TabContext, chosen: list[str], titles: list[str] | None = None) -> list[str]:
    """The checkpoints offered: the catalog's, and the chosen ones it does not list."""
    titles = ctx.catalog.titles() if titles is None else titles
    return titles + [m for m in chosen or [] if m not in titles]


def recipe_files(ctx: TabContext) -> list[str]:
    """The recipes offered: uploaded ones and the runs' best recipes in the run folder."""
    root = Path(ctx.output_dir()).expanduser()
    if not root.is_dir():
        return []
    found = sorted(root.glob("recipes/*.mecha")) + sorted(root.glob("*/best.mecha"))
    return [str(p) for p in found][:200]


def first_of(options: list[str], preferred: str) -> str | None:
    return preferred if preferred in options else (options[0] if options else None)


def with_option(options: list[str], value: str) -> list[str]:
    return options if value in options else [*options, value]
