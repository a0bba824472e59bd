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

What every WebUI host shares (the run and queue locks, restore, cond caches, generation loop) is
in webui_base.py; here is what A1111 does its own way.
"""

from __future__ import annotations

import sys

import torch

from sd_optim.hosts.base import GenerationJob
from sd_optim.hosts.webui_base import HostStateError, WebUIHost, WebUISlot

__all__ = ["A1111Host", "A1111Slot", "HostStateError", "checkpoint_key"]

_TEXT_ENCODER_PREFIXES = ("cond_stage_model.", "conditioner.")
_VAE_PREFIX = "first_stage_model."


def checkpoint_key(live_name: str) -> str:
    """The checkpoint key of a hijacked parameter name: every ``wrapped`` segment removed (§2)."""
    return ".".join(s for s in live_name.split(".") if s != "wrapped")


class A1111Slot(WebUISlot):
    """The loaded model under checkpoint keys. Reads of live keys are views: treat as read-only."""

    @property
    def _live(self):
        return self._owners

    def __init__(self, model, config_id: str, *, external_vae: str | None):
        self._start(model, config_id)
        config_keys = self._config_keys
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
        self._snapshots: dict[str, torch.Tensor | None] = {}
        self._fp16_snapshots: dict[str, torch.Tensor] = {}

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
                self._text_encoder_written()

    @staticmethod
    def _write(module: torch.nn.Module, name: str, value: torch.Tensor) -> None:
        result = module.load_state_dict({name: value}, strict=False)
        if name in result.missing_keys:  # cannot happen for an owned parameter; never silently skip
            raise RuntimeError(f"load_state_dict did not take {name!r}")

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


class A1111Host(WebUIHost):
    name = "a1111"

    def __init__(self):
        super().__init__()
        self._checkpoint = None

    # --- the loaded model -----------------------------------------------------------------

    def _model_for_run(self):
        from modules import sd_models

        # model_data, not shared.sd_model: the property would load a model when none is (§1)
        model = sd_models.model_data.sd_model
        if model is None:
            raise HostStateError("no model is loaded in the WebUI: load a checkpoint first")
        return model

    def _config_of(self, model) -> str:
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

    @property
    def device(self) -> torch.device:
        from modules import devices

        return torch.device(devices.device)

    # --- what identifies the loaded weights: the model object and its checkpoint file (§1) ---

    def _begin(self, model) -> None:
        self._model, self._checkpoint = model, model.sd_model_checkpoint

    def _weights_gone(self) -> str:
        from modules import sd_models

        model = sd_models.model_data.sd_model
        if model is not self._model:
            return "the WebUI switched to another model during the run"
        if model.sd_model_checkpoint != self._checkpoint:
            return (f"the WebUI loaded another checkpoint ({model.sd_model_checkpoint}) "
                    f"during the run")
        return ""

    def _reload_reason(self) -> str:
        return self._weights_gone() or self._selection_changed()

    def _selection_changed(self) -> str:
        # a switch in Settings writes opts at once and queues the reload behind our lock (§0.5)
        from modules import sd_models, shared

        selected = sd_models.checkpoint_aliases.get(shared.opts.sd_model_checkpoint)
        if selected is not None and selected.filename != self._checkpoint:
            return f"the checkpoint selected in the WebUI changed to {selected.title} during the run"
        return ""

    def _kept_identity(self):
        from modules import sd_models

        model = sd_models.model_data.sd_model
        return model, getattr(model, "sd_model_checkpoint", None)

    # --- the run --------------------------------------------------------------------------

    def _prepare(self, model):
        saved = _suspend_extra_networks(model)
        return lambda: _resume_extra_networks(saved)

    def _make_slot(self, model, config_id: str) -> A1111Slot:
        from modules import sd_vae

        return A1111Slot(model, config_id, external_vae=sd_vae.loaded_vae_file)

    def _processing(self, job: GenerationJob, seed: int):
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


def _suspend_extra_networks(model) -> dict:
    """Start from LoRA- and hypernetwork-free weights (§4): ``disable_extra_networks`` alone leaves
    the last generation's networks loaded and applied."""
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
