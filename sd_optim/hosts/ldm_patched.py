"""The ldm_patched-family host: reForge (Panchovix, ``main`` 3b56b268, '1.0.0v2-v1.10.1RC'), Forge
Classic (Haoming02, ``classic`` 1f95d717) and Forge ``previous`` (lllyasviel, bfee03d8).

Facts relied on are in docs/hosts/forge.md §4-§5 (R = reForge, C = Classic, P = previous). These
WebUIs keep an A1111 ``LatentDiffusion``/``DiffusionEngine`` as ``shared.sd_model`` whose UNet and VAE
*are* the ComfyUI-style objects' modules (``model.diffusion_model is
forge_objects.unet.model.diffusion_model``), so the A1111 bookkeeping (``sd_model_checkpoint``,
queue lock, ``shared.state``, cond caches) is reused from :class:`A1111Host` (and through it
webui_base.py); what differs is here:

- writes go through the live ComfyUI modules, looked up by name at every access: LoRA patching
  and unpatching put *new* Parameter objects in place, and an external VAE in R rebuilds
  ``forge_objects.vae``. Text encoders live in ``forge_objects.clip.cond_stage_model.clip_{l,g}``
  in the Hugging Face layout (CLIP-G's fused ``in_proj`` split into q/k/v, ``clip_g.text_projection``
  a bare Parameter holding the checkpoint tensor untransposed); every read and write is under
  ``torch.inference_mode()`` and copies into the live dtype;
- LoRA is baked by ``ModelPatcher.patch_model`` into the weights of the loaded clone, with the
  backup on the patcher: at run start the loaded patchers are unpatched and the WebUI's LoRA
  bookkeeping is reset, so trials start from the checkpoint's own weights and the user's LoRA is
  rebuilt at their next generation;
- R (A1111 1.10 base) has a ``scheduler`` field; C and P (A1111 1.8 base) name the schedule in the
  sampler ("DPM++ 2M Karras"): :meth:`LdmPatchedHost.sampler_name` maps a (sampler, schedule
  type) pair onto such a name or says which names exist.
"""

from __future__ import annotations

import dataclasses
import re

import torch

from sd_optim.hosts.a1111 import A1111Host
from sd_optim.hosts.base import GenerationJob
from sd_optim.hosts.webui_base import CLIP_G_BLOCK, CLIP_G_NAMES, HostStateError, WebUISlot, reset_cond_caches

_UNET, _VAE = "model.diffusion_model.", "first_stage_model."
_SD1_TE = "cond_stage_model.transformer.text_model."
_SDXL_L = "conditioner.embedders.0.transformer.text_model."
_SDXL_G = "conditioner.embedders.1.model."
_G_LIVE = "clip_g.transformer.text_model."
_RESBLOCK = re.compile(r"transformer\.resblocks\.(\d+)\.(.+)\.(weight|bias)$")
_IN_PROJ = re.compile(r"transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)$")
_QUANTIZED_ATTRS = ("gguf_cls", "bnb_quantized", "quant_state")  # packed weights (GGUF / bitsandbytes)


@dataclasses.dataclass(frozen=True)
class LiveLocation:
    """Where a checkpoint key lives: ``root`` ("unet", "vae", "clip") and the parameter name(s)
    under it; three names are the equal row blocks (q, k, v) of a fused ``in_proj``."""

    root: str
    names: tuple[str, ...]


def live_location(key: str) -> LiveLocation | None:
    """The live parameter(s) behind a checkpoint key of ``sd1-ldm`` / ``sdxl-sgm``, or None."""
    if key.startswith(_UNET):
        return LiveLocation("unet", (key[len(_UNET):],))
    if key.startswith(_VAE):
        return LiveLocation("vae", (key[len(_VAE):],))
    for prefix in (_SD1_TE, _SDXL_L):
        if key.startswith(prefix):
            return LiveLocation("clip", ("clip_l.transformer.text_model." + key[len(prefix):],))
    if not key.startswith(_SDXL_G):
        return None
    rest = key[len(_SDXL_G):]
    if rest in CLIP_G_NAMES:
        return LiveLocation("clip", (_G_LIVE + CLIP_G_NAMES[rest],))
    if rest in ("text_projection", "logit_scale"):  # bare Parameters, untransposed (forge.md §4)
        return LiveLocation("clip", ("clip_g." + rest,))
    m = _IN_PROJ.match(rest)
    if m:
        layer, kind = m.groups()
        return LiveLocation("clip", tuple(f"{_G_LIVE}encoder.layers.{layer}.self_attn.{p}_proj.{kind}"
                                          for p in ("q", "k", "v")))
    m = _RESBLOCK.match(rest)
    if m and m.group(2) in CLIP_G_BLOCK:
        layer, part, kind = m.groups()
        return LiveLocation("clip", (f"{_G_LIVE}encoder.layers.{layer}.{CLIP_G_BLOCK[part]}.{kind}",))
    return None


def _owner(root: torch.nn.Module, name: str) -> tuple[torch.nn.Module, str] | None:
    """The module owning parameter ``name`` under ``root``; A1111's hijack wrappers
    (``EmbeddingsWithFixes`` around the token embeddings) are stepped through by ``wrapped``."""
    *path, leaf = name.split(".")
    module = root
    for seg in path + [None]:
        while True:
            if seg is None:
                if leaf in module._parameters and module._parameters[leaf] is not None:
                    return module, leaf
            elif seg in module._modules:
                module = module._modules[seg]
                break
            if "wrapped" not in module._modules:
                return None
            module = module._modules["wrapped"]
    return None


class LdmPatchedSlot(WebUISlot):
    """The loaded model under checkpoint keys. Reads of single-tensor keys are views of the live
    parameter: treat them as read-only."""

    @property
    def _live(self):
        return self._locations

    def __init__(self, model, config_id: str, *, external_vae: str | None, separate_te: bool,
                 old_clip_g: bool):
        self._start(model, config_id)
        keys = self._config.keys()
        # keys that stay off the live model: user-picked external VAE / text encoder (never
        # written), and R's "old CLIP G load", which leaves clip_g.text_projection at eye
        skipped = (_VAE,) if external_vae else ()
        skipped += (_SD1_TE, "conditioner.") if separate_te else ()
        skipped += (_SDXL_G + "text_projection",) if old_clip_g else ()
        self._locations: dict[str, LiveLocation] = {}
        for key in keys:
            loc = live_location(key)
            if loc is None or key.startswith(skipped):
                continue
            root = self._root(loc.root)
            if all(_owner(root, n) is not None for n in loc.names):
                self._locations[key] = loc
        if _UNET + "input_blocks.0.0.weight" not in self._locations:
            raise HostStateError(f"the loaded model has no parameter "
                                 f"'{_UNET}input_blocks.0.0.weight': not a {config_id} model")
        self._snapshots: dict[str, torch.Tensor | None] = {}

    def _root(self, root: str) -> torch.nn.Module:
        objects = self._model.forge_objects  # looked up each time: R's external VAE rebuilds .vae
        if root == "unet":
            return objects.unet.model.diffusion_model
        if root == "vae":
            return objects.vae.first_stage_model
        return objects.clip.cond_stage_model

    def _params(self, loc: LiveLocation) -> list[torch.nn.Parameter]:
        root = self._root(loc.root)
        found = []
        for name in loc.names:
            owner = _owner(root, name)
            if owner is None:
                raise HostStateError(f"the live model lost parameter {name!r} ({loc.root})")
            found.append(owner[0]._parameters[owner[1]])
        return found

    @property
    def device(self) -> torch.device:
        return self._params(self._locations[_UNET + "input_blocks.0.0.weight"])[0].device

    def _read_live(self, k: str) -> torch.Tensor:
        params = self._params(self._locations[k])
        if len(params) == 1:
            return params[0].detach()
        return torch.cat([p.detach() for p in params])

    def __getitem__(self, key: str) -> torch.Tensor:
        k = self._canonical(key)
        if k in self._side:
            return self._side[k]
        if k in self._locations:
            return self._read_live(k)
        buffers = dict(self._model.named_buffers())
        if k in buffers:
            return buffers[k].detach()
        raise KeyError(f"{key!r}: the loaded model has no such tensor")

    def __setitem__(self, key: str, value: torch.Tensor) -> None:
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"slot[{key!r}] must be a torch.Tensor, not {type(value).__name__}")
        k = self._canonical(key)
        with self._lock:
            if k not in self._locations:
                if k not in self._snapshots:
                    self._snapshots[k] = self._side.get(k)
                self._side[k] = value.detach().to("cpu", copy=True)
                return
            params = self._params(self._locations[k])
            shape = (params[0].shape if len(params) == 1
                     else torch.Size([sum(p.shape[0] for p in params), *params[0].shape[1:]]))
            if value.shape != shape:
                raise ValueError(f"shape mismatch for {key!r}: got {tuple(value.shape)}, "
                                 f"the model has {tuple(shape)}")
            if k not in self._snapshots:
                self._snapshots[k] = self._read_live(k).to("cpu", copy=True)
            self._write(params, value)
            if not k.startswith((_UNET, _VAE)):
                self._text_encoder_written()

    def writable(self, key: str) -> torch.Tensor | None:
        """The live parameter of ``key`` to be written in place under ``torch.inference_mode()``
        when it is an inference tensor (its snapshot is taken now), or None where the key is not
        one parameter (q/k/v thirds, keys off the live model): those go through ``slot[key] = value``."""
        k = self._canonical(key)
        with self._lock:
            if k not in self._locations:
                return None
            params = self._params(self._locations[k])
            if len(params) != 1:
                return None
            if k not in self._snapshots:
                self._snapshots[k] = params[0].detach().to("cpu", copy=True)
            if not k.startswith((_UNET, _VAE)):
                self._text_encoder_written()
            return params[0].detach()

    @staticmethod
    def _write(params: list[torch.nn.Parameter], value: torch.Tensor) -> None:
        # inference mode: params moved by the WebUI inside inference-mode code hold inference
        # tensors, which only take in-place writes there; copy_ casts to the live dtype (fp8 too)
        with torch.inference_mode():
            if len(params) == 1:
                params[0].copy_(value.detach())
                return
            for param, part in zip(params, value.detach().chunk(len(params))):
                param.copy_(part)

    def keep(self) -> None:
        with self._lock:
            self._snapshots = {}
            self.kept = True

    def restore(self) -> None:
        with self._lock:
            snapshots, self._snapshots = self._snapshots, {}
            for k, old in snapshots.items():
                if k in self._locations:
                    self._write(self._params(self._locations[k]), old)
                elif old is None:
                    self._side.pop(k, None)
                else:
                    self._side[k] = old


def _scheduler_field(processing) -> bool:
    """R's processing has ``scheduler`` (A1111 1.10); C/P's (A1111 1.8) raise TypeError on it."""
    return any(f.name == "scheduler" for f in dataclasses.fields(processing.StableDiffusionProcessingTxt2Img))


def _quantized(model) -> str:
    """What makes the loaded UNet unmergeable in place, or ""."""
    unet = model.forge_objects.unet.model
    scaled = getattr(getattr(unet, "model_config", None), "scaled_fp8", None)
    if scaled is not None:
        return f"scaled fp8 ({scaled}): its weights are multiplied by per-layer scales"
    for name, param in unet.diffusion_model.named_parameters():
        for attr in _QUANTIZED_ATTRS:
            if getattr(param, attr, None) not in (None, False):
                return f"quantized ({attr} on {name})"
        if not (param.dtype.is_floating_point or param.dtype.is_complex):
            return f"quantized ({name} is stored as {param.dtype})"
    return ""


class LdmPatchedHost(A1111Host):
    name = "ldm_patched"

    def _config_of(self, model) -> str:
        if getattr(model, "forge_objects", None) is None:
            raise HostStateError("the loaded model has no forge_objects: not an ldm_patched "
                                 "(reForge / Forge Classic / Forge previous) model")
        if getattr(model, "is_sd3", False):
            raise HostStateError("the loaded model is SD3: sd-optim merges sd1-ldm and sdxl-sgm "
                                 "models only")
        config_id = super()._config_of(model)
        why = _quantized(model)
        if why:
            raise HostStateError(f"the loaded UNet is {why}: sd-optim cannot merge into packed or "
                                 f"scaled weights in place; load the checkpoint unquantized")
        return config_id

    def schedulers(self) -> list[str]:
        from modules import processing

        if not _scheduler_field(processing):
            return []  # C/P: the schedule is part of the sampler name
        from modules import sd_schedulers

        return [s.label for s in sd_schedulers.schedulers]

    def sampler_name(self, sampler: str, scheduler: str) -> tuple[str, str | None]:
        """The WebUI's sampler name (and scheduler field, R only) for a job's pair.

        C/P: "Automatic" keeps the sampler as named; any other schedule type is appended
        ("DPM++ 2M" + "Karras" -> "DPM++ 2M Karras"; "SGM Uniform" is spelled "SGMUniform" there),
        which must be one of the WebUI's sampler names."""
        from modules import processing

        names = self.samplers()
        if _scheduler_field(processing):
            if sampler not in names:
                raise ValueError(f"not a sampler of this WebUI: {sampler!r} (valid: {', '.join(names)})")
            return sampler, scheduler
        if not scheduler or scheduler == "Automatic":
            candidates = [sampler]
        else:
            word = scheduler.replace(" ", "")
            candidates = [f"{sampler} {scheduler}", f"{sampler} {word}"]
            if sampler.endswith((f" {scheduler}", f" {word}")):
                candidates.append(sampler)
        for name in candidates:
            if name in names:
                return name, None
        raise ValueError(f"this WebUI has no sampler {candidates[0]!r} (sampler {sampler!r} with "
                         f"schedule type {scheduler!r}; it names the schedule in the sampler and "
                         f"has no separate schedule types); valid samplers: {', '.join(names)}")

    def sampler_problems(self, sampler: str, scheduler: str) -> dict[str, str]:
        from modules import processing

        if _scheduler_field(processing):
            return super().sampler_problems(sampler, scheduler)
        try:
            self.sampler_name(sampler, scheduler)
        except ValueError:
            return {"sampler": (f"not a sampler of this WebUI with schedule type {scheduler!r} (it names "
                                f"the schedule in the sampler, e.g. 'DPM++ 2M Karras'), got {sampler!r} "
                                f"(valid: {', '.join(self.samplers())})")}
        return {}

    # --- the run --------------------------------------------------------------------------

    def _prepare(self, model):
        from modules import processing

        _reset_lora(model)
        reset_cond_caches(processing)  # conds of the user's LoRA'd text encoders
        # the user's next generation rebuilds their LoRA (hash emptied)

    def _make_slot(self, model, config_id: str) -> LdmPatchedSlot:
        from modules import sd_vae, shared

        return LdmPatchedSlot(
            model, config_id, external_vae=getattr(sd_vae, "loaded_vae_file", None),
            separate_te=bool(getattr(model, "_separate_te_loaded", False)),
            old_clip_g=bool(getattr(shared.opts, "use_old_clip_g_load_and_ztsnr_application", False)))

    def _processing(self, job: GenerationJob, seed: int):
        from modules import processing

        sampler, scheduler = self.sampler_name(job.sampler, job.scheduler)
        extra = {"scheduler": scheduler} if _scheduler_field(processing) else {}
        return processing.StableDiffusionProcessingTxt2Img(
            prompt=job.prompt, negative_prompt=job.negative_prompt, styles=[], seed=seed,
            subseed=seed, subseed_strength=0, sampler_name=sampler, batch_size=1, n_iter=1,
            steps=job.steps, cfg_scale=job.cfg_scale, width=job.width, height=job.height,
            do_not_save_samples=True, do_not_save_grid=True, disable_extra_networks=True,
            # pin the checkpoint against a mid-run switch in Settings; a custom UNet would
            # ignore the merged weights
            override_settings={"sd_model_checkpoint": self._model.sd_checkpoint_info.title,
                               "sd_unet": "None"},
            override_settings_restore_afterwards=True, **extra)


def _reset_lora(model) -> None:
    """Un-bake the user's LoRA and make trials use the LoRA-free patchers (forge.md §4).

    ``unload_all_models`` unpatches (restores the backups of) every patcher loaded on the torch
    device; a patcher loaded elsewhere (a text encoder kept on the CPU) is unpatched directly.
    The WebUI's LoRA bookkeeping then points at the original patchers: ``process_images`` uses
    ``forge_objects_after_applying_lora`` even with extra networks disabled, and the emptied
    hash makes the user's next generation rebuild their LoRA clones from the restored weights."""
    from ldm_patched.modules import model_management

    model_management.unload_all_models()
    for loaded in list(model_management.current_loaded_models):
        patcher = loaded.model
        if getattr(patcher, "backup", None):
            patcher.unpatch_model()
    model.forge_objects_after_applying_lora = model.forge_objects_original.shallow_copy()
    model.forge_objects = model.forge_objects_original.shallow_copy()
    model.current_lora_hash = str([])
