"""The A1111 1.10 host: merges into the checkpoint the WebUI has loaded and renders through its
own txt2img processing, in the WebUI's process. The only core-side module that imports
``modules.*`` (lazily, so importing this file outside a WebUI is harmless).

Facts relied on are in docs/hosts/a1111.md (A1111 v1.10.1, 82a973c0); the section numbers
below refer to it.

Writes: the slot resolves each checkpoint key to the live Parameter once (the hijack only adds
``wrapped.`` segments to names, §2) and writes it with ``owner.load_state_dict({name: value},
strict=False)`` on the module that owns it. That is A1111's own load path, so the Lora
extension's patched ``_load_from_state_dict`` drops the module's backups (§4) and a stale
backup can never be copied back over a merge, and it needs no ``undo_hijack``/``hijack`` per
write (which would re-apply the attention optimizations every trial). The copy casts to the
live dtype (fp8 storage included) on the live device.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from sd_optim.hosts.base import CheckpointRef, GeneratedImage, GenerationJob, Host, WebUISlot

log = logging.getLogger("sd_optim")

JOB_NAME = "sd-optim"
_TEXT_ENCODER_PREFIXES = ("cond_stage_model.", "conditioner.")
_VAE_PREFIX = "first_stage_model."


class HostStateError(RuntimeError):
    """The WebUI is in a state sd-optim cannot merge into (no model, unknown architecture, ...)."""


def checkpoint_key(live_name: str) -> str:
    """The checkpoint key of a hijacked parameter name: every ``wrapped`` segment removed (§2)."""
    return ".".join(s for s in live_name.split(".") if s != "wrapped")


def _reset_cond_caches(processing) -> None:
    # class-level [key, value] lists keyed by checkpoint, not weights (§5): rebind, as close() does
    base, txt2img = processing.StableDiffusionProcessing, processing.StableDiffusionProcessingTxt2Img
    base.cached_c, base.cached_uc = [None, None], [None, None]
    txt2img.cached_hr_c, txt2img.cached_hr_uc = [None, None], [None, None]


class A1111Slot(WebUISlot):
    """The loaded model under checkpoint keys. Reads of live keys are views: treat as read-only."""

    @property
    def _live(self):
        return self._owners

    def __init__(self, model, config_id: str, *, external_vae: str | None):
        from sd_mecha.extensions import model_configs

        self._model = model
        self._config = model_configs.resolve(config_id)
        self._config_keys = config_keys = set(self._config.keys())
        self._owners: dict[str, tuple[torch.nn.Module, str, torch.nn.Parameter]] = {}
        for module_name, module in model.named_modules(remove_duplicate=False):
            for name, param in module._parameters.items():
                if param is None:
                    continue
                key = checkpoint_key(f"{module_name}.{name}" if module_name else name)
                if model.is_sdxl and key.startswith("cond_stage_model."):
                    continue  # the hijack's alias of the conditioner (§0.11)
                if key in config_keys and key not in self._owners:
                    self._owners[key] = (module, name, param)
        missing = [k for k in ("model.diffusion_model.input_blocks.0.0.weight",) if k not in self._owners]
        if missing:
            raise HostStateError(f"the loaded model has no parameter {missing[0]!r}: not a {config_id} model")
        # keys that stay off the live model: not parameters (EMA, schedule buffers), or the VAE
        # while an external VAE replaces it (§3: never write the VAE then)
        self._external_vae = external_vae
        self._side: dict[str, torch.Tensor] = {}
        self._snapshots: dict[str, torch.Tensor | None] = {}
        self._fp16_snapshots: dict[str, torch.Tensor] = {}
        self._te_dirty = False
        self.te_written = False
        self.kept = False
        self._lock = threading.Lock()

    @property
    def device(self) -> torch.device:
        return next(iter(self._owners.values()))[2].device

    def _is_live(self, k: str) -> bool:
        return k in self._owners and not (self._external_vae and k.startswith(_VAE_PREFIX))

    def __getitem__(self, key: str) -> torch.Tensor:
        k = self._canonical(key)
        if k in self._side:
            return self._side[k]
        if k in self._owners:
            return self._owners[k][2].detach()
        buffers = dict(self._model.named_buffers())
        if k in buffers:
            return buffers[k].detach()
        raise KeyError(f"{key!r}: the loaded model has no such tensor")

    def __setitem__(self, key: str, value: torch.Tensor) -> None:
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"slot[{key!r}] must be a torch.Tensor, not {type(value).__name__}")
        k = self._canonical(key)
        with self._lock:
            if not self._is_live(k):
                if k not in self._snapshots:
                    self._snapshots[k] = self._side.get(k)
                self._side[k] = value.detach().to("cpu", copy=True)
                return
            module, name, param = self._owners[k]
            if value.shape != param.shape:
                raise ValueError(f"shape mismatch for {key!r}: got {tuple(value.shape)}, "
                                 f"the model has {tuple(param.shape)}")
            if k not in self._snapshots:
                self._snapshots[k] = param.detach().to("cpu", copy=True)
            self._write(module, name, value)
            copy_attr = f"fp16_{name}"  # fp8 storage + cache_fp16_weight: the Lora base copy (§0.8)
            if getattr(module, copy_attr, None) is not None:
                self._fp16_snapshots.setdefault(k, getattr(module, copy_attr))
                setattr(module, copy_attr, value.detach().to("cpu", torch.float16, copy=True))
            if k.startswith(_TEXT_ENCODER_PREFIXES):
                self._te_dirty = self.te_written = True

    @staticmethod
    def _write(module: torch.nn.Module, name: str, value: torch.Tensor) -> None:
        result = module.load_state_dict({name: value}, strict=False)
        if name in result.missing_keys:  # cannot happen for an owned parameter; never silently skip
            raise RuntimeError(f"load_state_dict did not take {name!r}")

    def commit(self) -> None:
        """After text-encoder writes, conds computed from the old weights must go (§5)."""
        if self._te_dirty:
            refresh_conditioning(self._model)
            self._te_dirty = False

    def keep(self) -> None:
        with self._lock:
            self._snapshots, self._fp16_snapshots = {}, {}
            self.kept = True

    def restore(self) -> None:
        with self._lock:
            snapshots, self._snapshots = self._snapshots, {}
            fp16, self._fp16_snapshots = self._fp16_snapshots, {}
            for k, old in fp16.items():
                module, name, _ = self._owners[k]
                setattr(module, f"fp16_{name}", old)
            for k, old in snapshots.items():
                if not self._is_live(k):
                    if old is None:
                        self._side.pop(k, None)
                    else:
                        self._side[k] = old
                    continue
                module, name, _ = self._owners[k]
                self._write(module, name, old)


def refresh_conditioning(model) -> None:
    """Drop every cached cond and recompute the empty-prompt cond from the live text encoder.

    ``get_empty_cond`` is not used: it activates extra networks as a side effect (§0.9)."""
    from modules import devices, processing

    _reset_cond_caches(processing)
    if getattr(model, "cond_stage_model_empty_prompt", None) is not None:
        with devices.autocast(), torch.no_grad():
            empty = model.get_learned_conditioning([""])
        model.cond_stage_model_empty_prompt = empty["crossattn"] if isinstance(empty, dict) else empty


# one live run per WebUI process, whichever host object started it
_RUN_LOCK = threading.Lock()


class A1111Host(Host):
    name = "a1111"

    def __init__(self):
        self._run_lock = _RUN_LOCK
        self._model = None
        self._checkpoint = None
        self._changed = ""
        self._kept = None
        self._kept_on = None  # (model, checkpoint) the kept merge lives in
        self._watching_loads = False

    # --- the loaded model -----------------------------------------------------------------

    @staticmethod
    def _loaded_model():
        from modules import sd_models

        # model_data, not shared.sd_model: the property would load a model when none is (§1)
        model = sd_models.model_data.sd_model
        if model is None:
            raise HostStateError("no model is loaded in the WebUI: load a checkpoint first")
        return model

    def model_config(self) -> str:
        model = self._loaded_model()
        if getattr(model, "is_sdxl", False):
            if getattr(model, "is_sdxl_inpaint", False):
                raise HostStateError("the loaded model is an SDXL inpainting model: sd-optim merges "
                                     "sd1-ldm and sdxl-sgm models only")
            return "sdxl-sgm"
        if getattr(model, "is_sd1", False):
            return "sd1-ldm"
        kind = next((f for f in ("is_sd2", "is_ssd", "is_sd3") if getattr(model, f, False)), "")
        found = kind[3:].upper() if kind else type(model).__name__
        raise HostStateError(f"the loaded model is {found}: sd-optim merges sd1-ldm and sdxl-sgm "
                             f"models only")

    def checkpoints(self) -> list[CheckpointRef]:
        from modules import sd_models

        return [CheckpointRef(title=info.title, path=info.filename, short_hash=info.shorthash or "")
                for info in sd_models.checkpoints_list.values()]

    @property
    def device(self) -> torch.device:
        from modules import devices

        return torch.device(devices.device)

    def samplers(self) -> list[str]:
        from modules import sd_samplers

        return [s.name for s in sd_samplers.all_samplers]

    def schedulers(self) -> list[str]:
        from modules import sd_schedulers

        return [s.label for s in sd_schedulers.schedulers]

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
        return self._changed or self._weights_replaced() or self._selection_changed()

    # --- after a run ----------------------------------------------------------------------

    def checkpoint_dir(self) -> Path:
        from modules import sd_models, shared

        return Path(getattr(shared.cmd_opts, "ckpt_dir", None) or sd_models.model_path)

    def refresh_checkpoints(self) -> None:
        from modules import sd_models

        sd_models.list_models()

    def _kept_identity(self):
        """What identifies the weights now loaded (compared to tell a kept merge is still there)."""
        from modules import sd_models

        model = sd_models.model_data.sd_model
        return model, getattr(model, "sd_model_checkpoint", None)

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
    def open_slot(self) -> Iterator[A1111Slot]:
        from modules import call_queue, processing, sd_vae, shared

        if not self._run_lock.acquire(blocking=False):
            raise RuntimeError("an sd-optim run is already live in this WebUI")
        try:
            config_id = self.model_config()
            model = self._loaded_model()
            # txt2img, img2img and checkpoint switches wait for the run; non-reentrant (§0.6)
            with call_queue.queue_lock:
                shared.state.begin(job=JOB_NAME)
                shared.state.textinfo = "sd-optim"
                self._model, self._checkpoint, self._changed = model, model.sd_model_checkpoint, ""
                empty_cond = getattr(model, "cond_stage_model_empty_prompt", None)
                extra = _suspend_extra_networks(model)
                slot = None
                try:
                    slot = A1111Slot(model, config_id, external_vae=sd_vae.loaded_vae_file)
                    yield slot
                finally:
                    try:
                        if slot is not None:
                            self._restore(slot, model, processing, empty_cond)
                    finally:
                        _resume_extra_networks(extra)
                        self._model = None
                        shared.state.end()
        finally:
            self._run_lock.release()

    def _restore(self, slot: A1111Slot, model, processing, empty_cond) -> None:
        if self._weights_replaced():
            # the WebUI loaded other weights into the model (or another model): ours are gone,
            # and writing the snapshots would corrupt what it loaded
            log.warning("sd-optim: the loaded model changed during the run; nothing to restore")
            return
        slot.restore()
        if slot.kept:
            refresh_conditioning(model)  # the kept merge's text encoders, not the original's
        elif slot.te_written:
            _reset_cond_caches(processing)
            if empty_cond is not None:
                model.cond_stage_model_empty_prompt = empty_cond

    def _weights_replaced(self) -> str:
        from modules import sd_models

        model = sd_models.model_data.sd_model
        if model is not self._model:
            return "the WebUI switched to another model during the run"
        if model.sd_model_checkpoint != self._checkpoint:
            return (f"the WebUI loaded another checkpoint ({model.sd_model_checkpoint}) "
                    f"during the run")
        return ""

    def _selection_changed(self) -> str:
        # a switch in Settings writes opts at once and queues the reload behind our lock (§0.5)
        from modules import sd_models, shared

        selected = sd_models.checkpoint_aliases.get(shared.opts.sd_model_checkpoint)
        if selected is not None and selected.filename != self._checkpoint:
            return f"the checkpoint selected in the WebUI changed to {selected.title} during the run"
        return ""

    def _check_model(self) -> None:
        reason = self._weights_replaced() or self._selection_changed()
        if reason:
            self._changed = reason
            raise HostStateError(reason + "; the run stops")

    def _processing(self, job: GenerationJob, seed: int):
        """The txt2img processing object for image ``seed`` of ``job``."""
        from modules import processing

        return processing.StableDiffusionProcessingTxt2Img(
            prompt=job.prompt, negative_prompt=job.negative_prompt, styles=[], seed=seed,
            subseed=seed, subseed_strength=0, sampler_name=job.sampler, scheduler=job.scheduler,
            batch_size=1, n_iter=1, steps=job.steps, cfg_scale=job.cfg_scale, width=job.width,
            height=job.height, do_not_save_samples=True, do_not_save_grid=True,
            disable_extra_networks=True,
            # pin the checkpoint against a mid-run switch in Settings (§0.5) and keep any
            # custom UNet (TensorRT, ...) off: it would ignore the merged weights (§0.7)
            override_settings={"sd_model_checkpoint": self._model.sd_checkpoint_info.title,
                               "sd_unet": "None"},
            override_settings_restore_afterwards=True,
        )

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
                return  # samplers return a partial image on interrupt (§0.12): never score it
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


def _suspend_extra_networks(model) -> dict:
    """Start from LoRA- and hypernetwork-free weights (§4): ``disable_extra_networks`` alone leaves
    the last generation's networks loaded and applied."""
    import sys

    from modules import shared

    saved: dict = {"hypernetworks": list(getattr(shared, "loaded_hypernetworks", []) or [])}
    if saved["hypernetworks"]:
        shared.loaded_hypernetworks.clear()
    networks = sys.modules.get("networks")  # the built-in Lora extension's module
    if networks is None or not hasattr(networks, "loaded_networks"):
        return saved
    saved["networks"] = (networks, list(networks.loaded_networks))
    networks.load_networks([])
    for module in model.modules():
        if getattr(module, "network_current_names", ()):
            networks.network_restore_weights_from_backup(module)  # un-bake the applied LoRA
        if getattr(module, "network_current_names", ()) \
                or getattr(module, "network_weights_backup", None) is not None \
                or getattr(module, "network_bias_backup", None) is not None:
            networks.network_reset_cached_weight(module)
    return saved


def _resume_extra_networks(saved: dict) -> None:
    from modules import shared

    if saved.get("hypernetworks"):
        shared.loaded_hypernetworks[:] = saved["hypernetworks"]
    if "networks" in saved:
        networks, loaded = saved["networks"]
        # weights are clean and backups reset: the next forward re-applies these from scratch
        networks.loaded_networks[:] = loaded
