"""What the WebUI hosts (A1111, Forge, the ldm_patched family) share: the run lock, the queue
lock and ``shared.state`` around a run, the restore on every exit, the conditioning caches, the
A1111 ``modules`` lists and the generation loop. A WebUI's own module (a1111.py, forge.py,
ldm_patched.py) holds only what differs there. ``modules.*`` is imported lazily, so importing this
file outside a WebUI is harmless.

Lock order, the same in every WebUI: the run lock (one run per process, refused at once), then
the queue lock (waited for), then the loaded model is read. A checkpoint switch queued before the
run finishes first, and the run merges into the model it left loaded, never into one it replaced.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from sd_optim.hosts.base import CheckpointRef, GeneratedImage, GenerationJob, Host, Slot

log = logging.getLogger("sd_optim")

JOB_NAME = "sd-optim"

# OpenCLIP -> Hugging Face CLIPTextModel names of CLIP-G, as both Forge's huggingface_guess
# (utils.py:45-97) and ldm_patched's transformers_convert (utils.py:144-182 @reForge) rename them
CLIP_G_NAMES = {"positional_embedding": "embeddings.position_embedding.weight",
                "token_embedding.weight": "embeddings.token_embedding.weight",
                "ln_final.weight": "final_layer_norm.weight", "ln_final.bias": "final_layer_norm.bias"}
CLIP_G_BLOCK = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
                "attn.out_proj": "self_attn.out_proj"}


class HostStateError(RuntimeError):
    """The WebUI is in a state sd-optim cannot merge into (no model, unknown architecture, ...)."""


def reset_cond_caches(processing) -> None:
    """Drop the class-level cond caches: ``[key, value(, extra)]`` lists keyed by checkpoint, not
    weights (2 slots in A1111 and Forge Classic/previous, 3 in Forge and reForge; a1111.md §5,
    forge.md §3-§4). Instances alias them, so new lists of the same length are bound, as the
    WebUIs' own ``close()`` / ``clear_prompt_cache`` do."""
    for cls, attrs in ((processing.StableDiffusionProcessing, ("cached_c", "cached_uc")),
                       (processing.StableDiffusionProcessingTxt2Img, ("cached_hr_c", "cached_hr_uc"))):
        for attr in attrs:
            setattr(cls, attr, [None] * len(getattr(cls, attr)))


def refresh_conditioning(model) -> None:
    """Drop every cached cond and recompute the empty-prompt cond from the live text encoders,
    under ``devices.autocast()`` as the WebUI computes it at load. Not ``get_empty_cond``: it
    activates extra networks as a side effect (a1111.md §0.9). Forge has no empty-prompt cond
    (``None``: forge.md §3), so there only the caches go."""
    from modules import processing

    reset_cond_caches(processing)
    if getattr(model, "cond_stage_model_empty_prompt", None) is not None:
        from modules import devices

        with devices.autocast(), torch.no_grad():
            empty = model.get_learned_conditioning([""])
        model.cond_stage_model_empty_prompt = empty["crossattn"] if isinstance(empty, dict) else empty


class WebUISlot(Slot):
    """Bookkeeping the WebUI slots share: ``self._config`` (the sd-mecha model config) and
    ``self._config_keys``; ``self._live`` maps the keys held by live parameters (to whatever the
    slot needs to find them); ``self._side`` holds values of keys no live parameter takes.
    ``te_written``: a text encoder was written (its conds are stale); ``kept``: :meth:`keep` ran."""

    _config: Any
    _config_keys: set[str]
    _live: Mapping[str, Any]
    _side: dict[str, torch.Tensor]

    def _start(self, model, config_id: str) -> None:
        from sd_mecha.extensions import model_configs

        self._model = model
        self._config = model_configs.resolve(config_id)
        self._config_keys = set(self._config.keys())
        self._side = {}
        self._te_dirty = False
        self.te_written = False
        self.kept = False
        self._lock = threading.Lock()

    def _canonical(self, key: str) -> str:
        k = self._config.resolve_alias(key)
        if k not in self._config_keys:
            raise KeyError(f"{key!r} is not a key of model config {self._config.identifier}")
        return k

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._live) + [k for k in self._side if k not in self._live])

    def __len__(self) -> int:
        return len(self._live) + len([k for k in self._side if k not in self._live])

    def __contains__(self, key: object) -> bool:
        try:
            k = self._canonical(key)  # type: ignore[arg-type]
        except KeyError:
            return False
        return k in self._live or k in self._side

    def _text_encoder_written(self) -> None:
        self._te_dirty = self.te_written = True

    def commit(self) -> None:
        """After text-encoder writes, conds computed from the old weights must go."""
        if self._te_dirty:
            refresh_conditioning(self._model)
            self._te_dirty = False


# one live run per WebUI process, whichever host object started it
_RUN_LOCK = threading.Lock()


class WebUIHost(Host, abc.ABC):
    """A Host inside a WebUI built on A1111's ``modules`` (A1111 itself, Forge, reForge, ...)."""

    def __init__(self):
        self._run_lock = _RUN_LOCK
        self._model = None
        self._changed = ""
        self._kept = None
        self._kept_on = None  # _kept_identity() when the merge was kept
        self._watching_loads = False

    # --- what each WebUI answers ------------------------------------------------------------

    @abc.abstractmethod
    def _model_for_run(self):
        """The model the run merges into; the caller holds the queue lock."""

    @abc.abstractmethod
    def _config_of(self, model) -> str:
        """The sd-mecha config id of ``model``, or HostStateError why it cannot be merged."""

    @abc.abstractmethod
    def _begin(self, model) -> None:
        """Record what identifies the loaded weights at the run's start (``self._model`` too)."""

    @abc.abstractmethod
    def _weights_gone(self) -> str:
        """Why the weights the run started from are no longer in the model (restoring would write
        over what the WebUI loaded), or ""."""

    @abc.abstractmethod
    def _reload_reason(self) -> str:
        """Why the WebUI has (or will, at the next image) put other weights in place, or ""."""

    @abc.abstractmethod
    def _prepare(self, model) -> Callable[[], None] | None:
        """Start from the checkpoint's own weights (no LoRA baked in); returns what undoes the
        bookkeeping part of it after the run, if anything."""

    @abc.abstractmethod
    def _make_slot(self, model, config_id: str) -> WebUISlot: ...

    @abc.abstractmethod
    def _processing(self, job: GenerationJob, seed: int):
        """The txt2img processing object for image ``seed`` of ``job``."""

    @abc.abstractmethod
    def _kept_identity(self):
        """What identifies the weights now loaded (compared to tell a kept merge is still there)."""

    # --- lists ----------------------------------------------------------------------------

    def model_config(self) -> str:
        return self._config_of(self._loaded_model())

    def _loaded_model(self):
        return self._model_for_run()

    def checkpoints(self) -> list[CheckpointRef]:
        from modules import sd_models

        return [CheckpointRef(title=info.title, path=info.filename, short_hash=info.shorthash or "")
                for info in sd_models.checkpoints_list.values()]

    def samplers(self) -> list[str]:
        from modules import sd_samplers

        return [s.name for s in sd_samplers.all_samplers]

    def schedulers(self) -> list[str]:
        from modules import sd_schedulers

        return [s.label for s in sd_schedulers.schedulers]

    # --- stopping -------------------------------------------------------------------------

    def interrupted(self) -> bool:
        from modules import shared

        state = shared.state
        # with "Don't interrupt in the middle" the Interrupt button calls stop_generating()
        return bool(state.interrupted or getattr(state, "stopping_generation", False) or self._changed)

    def stop_reason(self) -> str:
        return self._changed or "interrupted"

    def model_changed(self) -> str:
        if self._model is None:
            return ""
        return self._changed or self._reload_reason()

    def _check_model(self) -> None:
        reason = self._reload_reason()
        if reason:
            self._changed = reason
            raise HostStateError(reason + "; the run stops")

    # --- after a run ----------------------------------------------------------------------

    def checkpoint_dir(self) -> Path:
        from modules import sd_models, shared

        return Path(getattr(shared.cmd_opts, "ckpt_dir", None) or sd_models.model_path)

    def refresh_checkpoints(self) -> None:
        """What the checkpoint dropdown's refresh button does on the server: the WebUI's
        ``refresh`` of the ``sd_model_checkpoint`` option (``shared_items.refresh_checkpoints``:
        ``sd_models.list_models()``), then its component's choices set from ``component_args``
        (``ui_common.create_refresh_button``), so that every page built or loaded from now on
        lists the new file."""
        from modules import sd_models, shared

        info = shared.opts.data_labels.get("sd_model_checkpoint")
        refresh = getattr(info, "refresh", None) or sd_models.list_models
        refresh()
        component = (getattr(shared, "settings_components", None) or {}).get("sd_model_checkpoint")
        args = getattr(info, "component_args", None)
        if component is not None and args is not None:
            for name, value in (args() if callable(args) else args).items():
                setattr(component, name, value)

    def mark_kept(self, kept) -> None:
        from modules import script_callbacks

        self._kept = kept
        self._kept_on = self._kept_identity() if kept is not None else None
        if kept is not None and not self._watching_loads:
            # any weight load (a reload of the same file included) replaces the kept merge
            script_callbacks.on_model_loaded(self._forget_kept)
            self._watching_loads = True

    def _forget_kept(self, _sd_model=None) -> None:
        self._kept, self._kept_on = None, None

    def kept_merge(self):
        if self._kept is not None and self._kept_on != self._kept_identity():
            self._forget_kept()
        return self._kept

    # --- the run --------------------------------------------------------------------------

    @contextlib.contextmanager
    def open_slot(self) -> Iterator[WebUISlot]:
        from modules import call_queue, shared

        if not self._run_lock.acquire(blocking=False):
            raise RuntimeError("an sd-optim run is already live in this WebUI")
        try:
            # txt2img, img2img and checkpoint switches wait for the run; not re-entrant. The model
            # is read only once the lock is held: a switch queued before the run has finished.
            with call_queue.queue_lock:
                model = self._model_for_run()
                config_id = self._config_of(model)
                shared.state.begin(job=JOB_NAME)
                shared.state.textinfo = "sd-optim"
                self._changed = ""
                self._begin(model)
                empty_cond = getattr(model, "cond_stage_model_empty_prompt", None)
                slot = resume = None
                try:
                    resume = self._prepare(model)
                    slot = self._make_slot(model, config_id)
                    yield slot
                finally:
                    try:
                        if slot is not None:
                            self._restore(slot, model, empty_cond)
                    finally:
                        if resume is not None:
                            resume()
                        self._model = None
                        shared.state.end()
        finally:
            self._run_lock.release()

    def _restore(self, slot: WebUISlot, model, empty_cond) -> None:
        from modules import processing

        gone = self._weights_gone()
        if gone:
            # ours are gone, and writing the snapshots would corrupt what the WebUI loaded
            log.warning("sd-optim: %s; nothing to restore", gone)
            return
        slot.restore()
        if slot.kept:
            refresh_conditioning(model)  # the kept merge's text encoders, not the original's
        elif slot.te_written:
            reset_cond_caches(processing)
            if empty_cond is not None:
                model.cond_stage_model_empty_prompt = empty_cond

    def generate(self, job: GenerationJob,
                 should_stop: Callable[[], bool] = lambda: False) -> Iterator[GeneratedImage]:
        from modules import processing, shared

        if self._model is None:
            raise RuntimeError("generate() needs an open slot (the WebUI's queue lock)")
        state = shared.state
        label = job.infotext_params.get("sd-optim", "")
        for i in range(job.n_images):
            if should_stop() or self.interrupted():
                return
            # the WebUI may have switched (or be about to reload) the model: stop before it can
            # load over the merge
            self._check_model()
            seed = job.seed + i
            p = self._processing(job, seed)
            p.scripts = None
            p.extra_generation_params.update(job.infotext_params)
            state.job_count, state.job_no = job.n_images, i
            state.textinfo = f"sd-optim: {label + ', ' if label else ''}image {i + 1}/{job.n_images}"
            with contextlib.closing(p):
                processed = processing.process_images(p)
            if state.interrupted or getattr(state, "stopping_generation", False):
                return  # samplers return a partial image on interrupt (a1111.md §0.12): never score it
            if state.skipped:
                state.skipped = False
                raise RuntimeError("the image was skipped in the WebUI (Skip)")
            self._check_model()
            if not processed.images:
                raise RuntimeError("the WebUI's processing returned no image")
            yield GeneratedImage(
                image=processed.images[0], seed=processed.all_seeds[0] if processed.all_seeds else seed,
                prompt=job.prompt, negative_prompt=job.negative_prompt,
                infotext=processed.infotexts[0] if processed.infotexts else "")
