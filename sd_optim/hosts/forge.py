"""The Forge2 host (lllyasviel/stable-diffusion-webui-forge ``main``, the ``backend/`` engine,
version '2.0.1v1.10.1'): merges into the model Forge has loaded and renders through its own
txt2img processing, in the WebUI's process. ``modules.*`` / ``backend.*`` are imported lazily,
so importing this file outside Forge is harmless.

Facts relied on are in docs/hosts/forge.md (Forge dfdcbab6, huggingface_guess 84826248); the
section numbers below refer to it.

Writes: a checkpoint key resolves to one or more parameters of the three components
(``forge_objects.unet.model.diffusion_model``, ``.vae.first_stage_model``,
``.clip.cond_stage_model``) in Forge's own layout (§1: the text encoders are HF
``CLIPTextModel``\\ s; CLIP-G's ``in_proj`` is split into q/k/v row thirds and its
``text_projection`` is stored transposed). Parameters are looked up by name at every access,
never kept: a LoRA refresh or a low-VRAM "CPU swap" load replaces the Parameter objects (§2).
Every read-for-backup and every write runs under ``torch.inference_mode()``: Forge loads its
weights as inference tensors, which cannot be written in place outside it (§2). ``copy_`` casts
to the live dtype (fp8 storage included) on the live device; a snapshot is the live bytes on the
CPU, so restore is bit-exact.

Generation calls ``processing.process_images`` directly from the run's thread while holding the
queue lock, as Forge's own API does (``modules/api/api.py``), and not through
``modules_forge.main_thread.run_and_wait_result``: that helper swallows exceptions (prints them,
stores ``last_exception`` and returns ``None``, §3), so a failing trial would look like one with
no image and its reason would be lost, and it buys nothing here: the run already owns the queue
lock, which is what serialises GPU work with the UI's generations.

What every WebUI host shares (the run and queue locks, restore, cond caches, generation loop) is
in webui_base.py; here is what Forge does its own way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from safetensors import safe_open

from sd_optim.hosts.base import GenerationJob
from sd_optim.hosts.webui_base import CLIP_G_BLOCK, CLIP_G_NAMES, HostStateError, WebUIHost, WebUISlot

log = logging.getLogger("sd_optim")

QUANTIZED_STORAGE = ("nf4", "fp4", "gguf")
_UNET, _VAE = "model.diffusion_model.", "first_stage_model."
_SD1_TE = "cond_stage_model.transformer.text_model."
_SDXL_L = "conditioner.embedders.0.transformer.text_model."
_SDXL_G = "conditioner.embedders.1.model."
_QKV = ("q_proj", "k_proj", "v_proj")


# --- checkpoint keys -> Forge parameters --------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One live parameter behind a checkpoint key: ``component`` is ``unet``/``vae``/``clip``,
    ``name`` the parameter's name inside that component's module. ``part`` (0, 1, 2) is the row
    third of the checkpoint tensor it holds (q/k/v of an ``in_proj``); ``transposed``: it holds
    the checkpoint tensor transposed (CLIP-G ``text_projection``)."""

    component: str
    name: str
    part: int | None = None
    transposed: bool = False


def forge_targets(key: str) -> tuple[Target, ...]:
    """Where Forge keeps checkpoint key ``key`` (sd1-ldm / sdxl-sgm names), as its loader puts it
    there (§1: ``split_state_dict`` and ``process_clip_state_dict``); ``()`` for keys it does not
    load (EMA, schedule buffers, ``position_ids``)."""
    if key.startswith(_UNET):
        return (Target("unet", key[len(_UNET):]),)
    if key.startswith(_VAE):
        return () if key.startswith(_VAE + "loss.") else (Target("vae", key[len(_VAE):]),)
    for prefix in (_SD1_TE, _SDXL_L):
        if key.startswith(prefix):
            rest = key[len(prefix):]
            return () if rest.endswith("position_ids") else (Target("clip", "clip_l.transformer.text_model." + rest),)
    if key.startswith(_SDXL_G):
        return _clip_g_targets(key[len(_SDXL_G):])
    return ()


def _clip_g_targets(rest: str) -> tuple[Target, ...]:
    text_model = "clip_g.transformer.text_model."
    if rest in CLIP_G_NAMES:
        return (Target("clip", text_model + CLIP_G_NAMES[rest]),)
    if rest == "text_projection":
        return (Target("clip", "clip_g.transformer.text_projection.weight", transposed=True),)
    if rest == "logit_scale":
        return (Target("clip", "clip_g.logit_scale"),)
    parts = rest.split(".")  # transformer.resblocks.N.<module...>.<weight|bias>
    if len(parts) < 5 or parts[:2] != ["transformer", "resblocks"] or not parts[2].isdigit() or int(parts[2]) >= 32:
        return ()  # huggingface_guess converts 32 layers; anything else is not loaded
    layer, module, leaf = parts[2], ".".join(parts[3:-1]), parts[-1]
    base = f"{text_model}encoder.layers.{layer}."
    if module == "attn" and leaf in ("in_proj_weight", "in_proj_bias"):
        y = leaf[len("in_proj_"):]
        return tuple(Target("clip", f"{base}self_attn.{n}.{y}", part=i) for i, n in enumerate(_QKV))
    if module in CLIP_G_BLOCK:
        return (Target("clip", f"{base}{CLIP_G_BLOCK[module]}.{leaf}"),)
    return ()


def _component_roots(model) -> dict[str, torch.nn.Module]:
    fo = model.forge_objects
    return {"unet": fo.unet.model.diffusion_model, "vae": fo.vae.first_stage_model,
            "clip": fo.clip.cond_stage_model}


def _find_param(root: torch.nn.Module, name: str) -> torch.nn.Parameter | None:
    owner_name, _, leaf = name.rpartition(".")
    try:
        owner = root.get_submodule(owner_name) if owner_name else root
    except AttributeError:
        return None
    return owner._parameters.get(leaf)


def quantized_parameter(model) -> str:
    """A description of the first quantized (bnb 4-bit / GGUF) weight, or "" (§2)."""
    storage = getattr(model.forge_objects.unet.model, "storage_dtype", None)
    if isinstance(storage, str) and storage in QUANTIZED_STORAGE:
        return f"the UNet is stored as {storage!r}"
    for component, root in _component_roots(model).items():
        for name, param in root.named_parameters():
            for marker in ("bnb_quantized", "gguf_cls"):
                if getattr(param, marker, None):
                    return f"{component} parameter {name!r} is quantized ({marker})"
    return ""


# --- the slot -----------------------------------------------------------------------------------


class ForgeSlot(WebUISlot):
    """The loaded model under checkpoint keys. Reads of single-parameter keys are views: treat
    as read-only."""

    @property
    def _live(self):
        return self._targets

    def __init__(self, model, config_id: str, *, external: frozenset[str] = frozenset()):
        self._start(model, config_id)
        roots = _component_roots(model)
        self._targets: dict[str, tuple[Target, ...]] = {}
        keys = self._config.keys()
        for key in keys:
            targets = forge_targets(key)
            if targets and all(_find_param(roots[t.component], t.name) is not None for t in targets):
                self._targets[key] = targets
        marker = _UNET + "input_blocks.0.0.weight"
        if marker not in self._targets:
            raise HostStateError(f"the loaded model has no parameter for {marker!r}: not a {config_id} model")
        # components an external VAE / text encoder replaced: never written (§1)
        self._external = external
        self._side_snapshots: dict[str, torch.Tensor | None] = {}
        self._snapshots: dict[tuple[str, str], torch.Tensor] = {}

    @property
    def device(self) -> torch.device:
        t = self._targets[_UNET + "input_blocks.0.0.weight"][0]
        return self._param(t).device

    def _param(self, t: Target) -> torch.nn.Parameter:
        # by name, every time: LoRA refreshes and CPU-swap loads replace Parameter objects (§2)
        param = _find_param(_component_roots(self._model)[t.component], t.name)
        if param is None:
            raise RuntimeError(f"Forge's {t.component} has no parameter {t.name!r} any more")
        return param

    def _is_live(self, k: str) -> bool:
        return k in self._targets and self._targets[k][0].component not in self._external

    def __getitem__(self, key: str) -> torch.Tensor:
        k = self._canonical(key)
        if k in self._side:
            return self._side[k]
        if k not in self._targets:
            raise KeyError(f"{key!r}: the loaded model has no such tensor")
        targets = self._targets[k]
        with torch.inference_mode():
            if len(targets) > 1:  # q/k/v thirds back into one in_proj tensor
                return torch.cat([self._param(t).detach() for t in sorted(targets, key=lambda t: t.part)])
            value = self._param(targets[0]).detach()
            return value.t() if targets[0].transposed else value

    def __setitem__(self, key: str, value: torch.Tensor) -> None:
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"slot[{key!r}] must be a torch.Tensor, not {type(value).__name__}")
        k = self._canonical(key)
        with self._lock:
            if not self._is_live(k):
                if k not in self._side_snapshots:
                    self._side_snapshots[k] = self._side.get(k)
                self._side[k] = value.detach().to("cpu", copy=True)
                return
            targets = self._targets[k]
            with torch.inference_mode():
                pieces = self._split(key, targets, value.detach())
                for t, piece in zip(targets, pieces):
                    param = self._param(t)
                    if (t.component, t.name) not in self._snapshots:
                        self._snapshots[(t.component, t.name)] = param.detach().to("cpu", copy=True)
                    param.copy_(piece)
            if targets[0].component == "clip":
                self._text_encoder_written()

    def writable(self, key: str) -> torch.Tensor | None:
        """The live parameter of ``key`` to be written in place under ``torch.inference_mode()``
        (its snapshot is taken now), or None where the key is not one parameter as the checkpoint
        lays it out (q/k/v thirds, the transposed projection, components an external file
        replaced, keys off the live model): those go through ``slot[key] = value``."""
        k = self._canonical(key)
        with self._lock:
            if not self._is_live(k):
                return None
            targets = self._targets[k]
            if len(targets) != 1 or targets[0].transposed:
                return None
            t = targets[0]
            param = self._param(t)
            if (t.component, t.name) not in self._snapshots:
                self._snapshots[(t.component, t.name)] = param.detach().to("cpu", copy=True)
            if t.component == "clip":
                self._text_encoder_written()
            return param.detach()

    def _split(self, key: str, targets: tuple[Target, ...], value: torch.Tensor) -> list[torch.Tensor]:
        shapes = [tuple(self._param(t).shape) for t in targets]
        if len(targets) > 1:
            want = (sum(s[0] for s in shapes), *shapes[0][1:])
            if tuple(value.shape) == want:
                return list(torch.split(value, [s[0] for s in shapes]))
        elif targets[0].transposed:
            want = tuple(reversed(shapes[0]))
            if tuple(value.shape) == want:
                return [value.t()]
        else:
            want = shapes[0]
            if tuple(value.shape) == want:
                return [value]
        raise ValueError(f"shape mismatch for {key!r}: got {tuple(value.shape)}, the model has {want}")

    def keep(self) -> None:
        with self._lock:
            self._snapshots, self._side_snapshots = {}, {}
            self.kept = True

    def restore(self) -> None:
        with self._lock:
            snapshots, self._snapshots = self._snapshots, {}
            side, self._side_snapshots = self._side_snapshots, {}
            for k, old in side.items():
                if old is None:
                    self._side.pop(k, None)
                else:
                    self._side[k] = old
            with torch.inference_mode():
                for (component, name), old in snapshots.items():
                    self._param(Target(component, name)).copy_(old)


def reset_lora(model) -> None:
    """Un-bake the LoRA of the user's last generation before anything is snapshotted (§2 "Reset"):
    ``process_images`` re-applies ``forge_objects_after_applying_lora`` even with extra networks
    disabled, and a patcher load re-bakes its patches. The user's next generation with LoRA
    tags rebuilds and re-bakes them (the hash no longer matches)."""
    model.forge_objects_after_applying_lora = model.forge_objects_original.shallow_copy()
    model.current_lora_hash = str([])
    model.forge_objects = model.forge_objects_original.shallow_copy()
    fo = model.forge_objects
    for patcher in (fo.unet, fo.clip.patcher, fo.vae.patcher):
        patcher.lora_loader.refresh(lora_patches={}, offload_device=patcher.offload_device, force_refresh=True)


def external_components(paths) -> frozenset[str]:
    """Which components Forge's additional modules replace (``backend/loader.py``
    ``replace_state_dict``): ``vae`` for a file with ``decoder.conv_in.weight``, ``clip`` for one
    with CLIP text-model keys; a file that cannot be read as safetensors counts as both."""
    found: set[str] = set()
    for path in paths or []:
        try:
            with safe_open(str(path), framework="pt") as f:
                keys = list(f.keys())
        except Exception as e:  # noqa: BLE001 - unknown format: protect both components
            log.warning("sd-optim: cannot read the keys of additional module %s (%s); its VAE and "
                        "text encoders are left alone", path, e)
            found |= {"vae", "clip"}
            continue
        if any(k.endswith("decoder.conv_in.weight") for k in keys):
            found.add("vae")
        if any(m in k for k in keys for m in ("text_model.", "resblocks.", "token_embedding")):
            found.add("clip")
    return frozenset(found)


class ForgeHost(WebUIHost):
    """Forge keeps A1111's ``modules`` API for lists, interrupt, queue and processing (webui_base.py);
    what differs is how its model is loaded, identified and prepared."""

    name = "forge"
    # Forge reloads a switched checkpoint only at the next generation (docs/hosts/forge.md)
    kept_until = ("generating with another checkpoint (or after reloading this one) brings the original back; "
                  "switching away and back without generating in between keeps the merge")

    def __init__(self):
        super().__init__()
        self._hash = ""

    # --- the loaded model -----------------------------------------------------------------

    def _model_for_run(self):
        """The model Forge will generate with, loaded now if Forge has not yet (a
        ``FakeInitialModel`` until the first generation) or the selection changed since (§1).
        The caller holds the queue lock."""
        from modules import sd_models

        data = sd_models.model_data
        params = data.forge_loading_parameters or {}
        if not params.get("checkpoint_info"):
            raise HostStateError("no checkpoint is selected in Forge (forge_loading_parameters has no "
                                 "checkpoint_info): pick a checkpoint in the WebUI first")
        if not hasattr(data.sd_model, "forge_objects") or str(params) != data.forge_hash:
            sd_models.forge_model_reload()
        model = data.sd_model
        if model is None or not hasattr(model, "forge_objects"):
            raise HostStateError(f"Forge has no model loaded (got {type(model).__name__})")
        return model

    def _loaded_model(self):
        """Outside a run Forge may have to load the model first, which needs the queue lock."""
        from modules import call_queue, sd_models

        data = sd_models.model_data
        if self._run_lock.locked() and hasattr(data.sd_model, "forge_objects"):
            # a run is live: the queue lock is taken (and not re-entrant), and loading now would
            # replace the merge; answer for the model the run holds
            return data.sd_model
        with call_queue.queue_lock:
            return self._model_for_run()

    def _config_of(self, model) -> str:
        if getattr(model, "is_sdxl", False):
            config = "sdxl-sgm"
        elif getattr(model, "is_sd1", False):
            config = "sd1-ldm"
        else:
            kind = next((f for f in ("is_sd2", "is_sd3") if getattr(model, f, False)), "")
            found = kind[3:].upper() if kind else type(model).__name__
            raise HostStateError(f"the loaded model is {found}: sd-optim merges sd1-ldm and sdxl-sgm "
                                 f"models only")
        quantized = quantized_parameter(model)
        if quantized:
            raise HostStateError(f"cannot merge in place into a quantized model: {quantized}; pick "
                                 f"'Automatic' or a float8 storage in Forge's 'Diffusion in Low Bits'")
        return config

    @property
    def device(self) -> torch.device:
        from backend import memory_management

        return torch.device(memory_management.get_torch_device())

    # --- what identifies the loaded weights: the model object and Forge's loading hash (§1) ---

    def _begin(self, model) -> None:
        from modules import sd_models

        self._model, self._hash = model, sd_models.model_data.forge_hash

    def _weights_gone(self) -> str:
        """A changed selection leaves the model in place until the next generation: only another
        model object means the merge (and what restore would write into) is gone."""
        from modules import sd_models

        if sd_models.model_data.sd_model is not self._model:
            return "Forge loaded another model during the run"
        return ""

    def _reload_reason(self) -> str:
        from modules import sd_models

        data = sd_models.model_data
        if data.sd_model is not self._model:
            return "Forge loaded another model during the run"
        if str(data.forge_loading_parameters) != self._hash or data.forge_hash != self._hash:
            info = (data.forge_loading_parameters or {}).get("checkpoint_info")
            what = getattr(info, "title", None) or getattr(info, "filename", None) or "another model"
            return f"the model selected in Forge changed to {what} during the run"
        return ""

    def _kept_identity(self):
        from modules import sd_models

        data = sd_models.model_data
        return data.sd_model, data.forge_hash

    # --- the run --------------------------------------------------------------------------

    def _prepare(self, model):
        reset_lora(model)
        # the user's next generation rebuilds their LoRA (hash emptied)

    def _make_slot(self, model, config_id: str) -> ForgeSlot:
        from modules import sd_models

        params = sd_models.model_data.forge_loading_parameters
        return ForgeSlot(model, config_id, external=external_components(params.get("additional_modules")))

    def refresh_checkpoints(self) -> None:
        """What Forge's checkpoint refresh button runs (``main_entry.refresh_models``: the checkpoint
        list and the VAE / text-encoder module list); Forge refreshes its dropdowns' choices from
        it at every page load, and ↻ pushes them to an open page (forge.md §3)."""
        from modules_forge import main_entry

        main_entry.refresh_models()

    def _processing(self, job: GenerationJob, seed: int):
        """No ``override_settings``: in Forge a checkpoint override is itself a switch (§3), and
        the selection is checked before and after every image instead."""
        from modules import processing

        return processing.StableDiffusionProcessingTxt2Img(
            prompt=job.prompt, negative_prompt=job.negative_prompt, styles=[], seed=seed,
            subseed=seed, subseed_strength=0, sampler_name=job.sampler, scheduler=job.scheduler,
            batch_size=1, n_iter=1, steps=job.steps, cfg_scale=job.cfg_scale, width=job.width,
            height=job.height, do_not_save_samples=True, do_not_save_grid=True,
            disable_extra_networks=True)
