"""The standalone host: a diffusers pipeline built from a single-file SD1 / SDXL checkpoint.

It powers the headless CLI, the browser app, the demo and the tests. The slot presents the
pipeline's live parameters under the checkpoint's own key names (see ``diffusers_keymap``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from sd_optim.files.inputs import file_hash
from sd_optim.files.tensor_files import iter_tensors
from sd_optim.hosts import diffusers_keymap as km
from sd_optim.hosts.base import CheckpointRef, GeneratedImage, GenerationJob, Host, Slot

_ABSENT = object()
_IN_FILE = object()  # a kept key whose value before the keep is the checkpoint file's own

# A1111 sampler name -> (diffusers scheduler class, constructor overrides, A1111 1.10's
# default schedule type, used when the job says "Automatic").
_SAMPLERS: dict[str, tuple[str, dict, str]] = {
    "Euler": ("EulerDiscreteScheduler", {}, "Uniform"),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}, "Uniform"),
    "Heun": ("HeunDiscreteScheduler", {}, "Uniform"),
    "LMS": ("LMSDiscreteScheduler", {}, "Uniform"),
    "DPM2": ("KDPM2DiscreteScheduler", {}, "Karras"),
    "DPM2 a": ("KDPM2AncestralDiscreteScheduler", {}, "Karras"),
    "DPM++ 2M": ("DPMSolverMultistepScheduler",
                 {"algorithm_type": "dpmsolver++", "solver_order": 2}, "Karras"),
    # A1111 defaults to Exponential here, which diffusers 0.31 breaks for SDE solvers (below)
    "DPM++ 2M SDE": ("DPMSolverMultistepScheduler",
                     {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}, "Karras"),
    # diffusers has no ancestral single-step solver: this is the closest (deterministic) one
    "DPM++ 2S a": ("DPMSolverSinglestepScheduler",
                   {"algorithm_type": "dpmsolver++", "solver_order": 2}, "Karras"),
    "DDIM": ("DDIMScheduler", {}, ""),
    "PLMS": ("PNDMScheduler", {"skip_prk_steps": True}, ""),
    "UniPC": ("UniPCMultistepScheduler", {}, ""),
}
if importlib.util.find_spec("torchsde") is not None:  # DPMSolverSDEScheduler needs it
    _SAMPLERS["DPM++ SDE"] = ("DPMSolverSDEScheduler", {}, "Karras")

# A1111 schedule type -> the scheduler constructor argument that implements it ("" = defaults).
_SCHEDULES: dict[str, tuple[str, object]] = {
    "Automatic": ("", None),
    "Uniform": ("timestep_spacing", "linspace"),
    "SGM Uniform": ("timestep_spacing", "trailing"),
    "Karras": ("use_karras_sigmas", True),
    "Exponential": ("use_exponential_sigmas", True),
    "Beta": ("use_beta_sigmas", True),
}
# Combinations diffusers 0.31 accepts but renders wrong: NaN images (SDE solver with exponential
# or beta sigmas) or a NameError inside set_timesteps. ("DPM++ 3M SDE" is left out altogether:
# its third-order SDE step raises UnboundLocalError.)
_BROKEN = {("DPM++ 2M SDE", "Exponential"), ("DPM++ 2M SDE", "Beta"),
           ("DPM++ 2S a", "Exponential"), ("DPM++ 2S a", "Beta"),
           ("UniPC", "Exponential"), ("UniPC", "Beta")}
_SIGMA_FLAGS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")


def _init_params(cls) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters)


def _schedules_for(sampler: str) -> list[str]:
    import diffusers

    params = _init_params(getattr(diffusers, _SAMPLERS[sampler][0]))
    return [s for s, (arg, _) in _SCHEDULES.items()
            if (not arg or arg in params) and (sampler, s) not in _BROKEN]


def make_scheduler(sampler: str, schedule: str, base_config: dict):
    """A diffusers scheduler for A1111's ``sampler`` / ``schedule`` names on the model's betas."""
    import diffusers

    if sampler not in _SAMPLERS:
        extra = " ('DPM++ SDE' needs the torchsde package)" if sampler == "DPM++ SDE" else ""
        raise ValueError(f"unknown sampler {sampler!r}{extra}; valid: {', '.join(_SAMPLERS)}")
    valid = _schedules_for(sampler)
    if schedule not in valid:
        raise ValueError(f"schedule type {schedule!r} is not available for sampler {sampler!r}; "
                         f"valid: {', '.join(valid)}")
    cls_name, overrides, default = _SAMPLERS[sampler]
    cls = getattr(diffusers, cls_name)
    params = _init_params(cls)
    kwargs = dict(overrides)
    for flag in _SIGMA_FLAGS:  # the checkpoint's own config may have one set
        if flag in params:
            kwargs[flag] = False
    effective = default if schedule == "Automatic" and default in valid else schedule
    arg, value = _SCHEDULES[effective]
    if arg:
        kwargs[arg] = value
    config = {k: v for k, v in base_config.items() if not k.startswith("_")}
    return cls.from_config(config, **kwargs)


def infer_model_config(keys) -> str | None:
    """sd-mecha's key-based config inference: the best-matching config id, or None."""
    from sd_mecha.graph_finalization import generate_configs_stats

    stats = generate_configs_stats(keys)
    if not stats:
        return None
    return min(stats.items(), key=lambda kv: (kv[1].state_dict_misses, -len(kv[1].intersection)))[0]


def _missing_required(config_id: str, keys) -> list[str]:
    from sd_mecha.extensions import model_configs

    config = model_configs.resolve(config_id)
    present = {config.resolve_alias(k) for k in keys}
    return sorted(k for k, meta in config.keys().items() if not meta.optional and k not in present)


def _checkpoint_keys(path: Path) -> list[str]:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    sd = torch.load(str(path), map_location="cpu", mmap=True, weights_only=True)
    return list(sd.get("state_dict", sd).keys())


def _quote(value: str) -> str:
    # A1111's infotext quoting: values with separators are JSON strings
    return json.dumps(value, ensure_ascii=False) if any(c in value for c in ",:\n") else value


def _fmt_number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


class DiffusersSlot(Slot):
    """The pipeline's live tensors under checkpoint keys. Reads of single-tensor keys are views
    of the live parameters: treat them as read-only (clone before mutating)."""

    METADATA_KEY = "__metadata__"

    def __init__(self, host: DiffusersHost):
        self._host = host
        self._snapshots: dict[str, object] = {}
        # sd_mecha.merge(..., output=slot) writes the serialized recipe here first
        self.metadata: dict | None = None

    @property
    def device(self) -> torch.device:
        return self._host.device

    def __getitem__(self, key: str) -> torch.Tensor:
        if key == self.METADATA_KEY and self.metadata is not None:
            return self.metadata  # type: ignore[return-value]
        return self._host._read(self._host._canonical(key))

    def __setitem__(self, key: str, value: torch.Tensor) -> None:
        if key == self.METADATA_KEY and isinstance(value, dict):
            self.metadata = dict(value)
            return
        host = self._host
        k = host._canonical(key)
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"slot[{key!r}] must be a torch.Tensor, not {type(value).__name__}")
        if k in host._live:
            expected = host._shapes[k]
            if value.shape != expected:
                raise ValueError(f"shape mismatch for {key!r}: got {tuple(value.shape)}, "
                                 f"the model has {tuple(expected)}")
            if k not in self._snapshots:
                self._snapshots[k] = host._read(k).detach().to("cpu", copy=True)
            host._write_live(k, value)
        else:
            if k not in self._snapshots:
                self._snapshots[k] = host._side.get(k, _ABSENT)
            host._write_side(k, value)

    def writable(self, key: str) -> torch.Tensor | None:
        """The live parameter of ``key`` to be written in place (its snapshot is taken now), or
        None where the key is not one parameter in the checkpoint's layout (fused q/k/v,
        transposed projections, keys off the live model): those go through ``slot[key] = value``."""
        host = self._host
        k = host._canonical(key)
        tensors = host._live.get(k)
        if tensors is None or len(tensors) != 1 or host._rules[k].targets[0].op != "view":
            return None
        target = km.join(host._rules[k], [tensors[0].detach()])
        if target.data_ptr() != tensors[0].data_ptr() or not target.is_contiguous():
            return None  # a reshape that had to copy: writing it would not reach the model
        if k not in self._snapshots:
            self._snapshots[k] = target.to("cpu", copy=True)
        return target

    def __iter__(self) -> Iterator[str]:
        return iter(self._host._keys())

    def __len__(self) -> int:
        return len(self._host._keys())

    def __contains__(self, key: object) -> bool:
        try:
            return self._host._canonical(key) in self._host._key_set()  # type: ignore[arg-type]
        except KeyError:
            return False

    def keep(self) -> None:
        host = self._host
        for k, old in self._snapshots.items():
            # what the key held before the first keep; the file's value is read again when the
            # next run puts it back, so a kept merge costs no second copy of the model
            host._before_keep.setdefault(k, _IN_FILE if k in host._file_keys else old)
        self._snapshots = {}

    def restore(self) -> None:
        snapshots, self._snapshots = self._snapshots, {}
        for k, old in snapshots.items():
            self._host._put_back(k, old)


class DiffusersHost(Host):
    name = "diffusers"
    kept_until = "the next run starts from the model file's own weights again"  # see release_kept

    def __init__(self, checkpoint: str | Path, *, config_dir: str | Path | None = None,
                 device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                 progress_bars: bool = False):
        from diffusers.utils import logging as dlogging

        self.path = Path(checkpoint)
        if not self.path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {self.path}")
        self._device = torch.device(device)
        if dtype is None:
            dtype = torch.float16 if self._device.type == "cuda" else torch.float32
        self.dtype = dtype
        file_keys = _checkpoint_keys(self.path)
        cfg_id = infer_model_config(file_keys)
        if cfg_id not in km.SUPPORTED_CONFIGS:
            found = f"it looks like {cfg_id!r}" if cfg_id else "no sd-mecha model config matches its keys"
            raise ValueError(f"{self.path.name}: unsupported checkpoint ({found}); the diffusers "
                             f"host loads {' and '.join(km.SUPPORTED_CONFIGS)} checkpoints only")
        self._config_id = cfg_id
        missing = _missing_required(cfg_id, file_keys)
        if missing:
            raise ValueError(f"{self.path.name}: incomplete {cfg_id} checkpoint, {len(missing)} "
                             f"required keys are missing (e.g. {', '.join(missing[:3])})")

        from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

        cls = StableDiffusionXLPipeline if cfg_id == "sdxl-sgm" else StableDiffusionPipeline
        kwargs: dict = {"torch_dtype": dtype}
        if config_dir is not None:
            kwargs.update(config=str(config_dir), local_files_only=True)
        elif os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
            kwargs["local_files_only"] = True
        was_enabled = dlogging.is_progress_bar_enabled()
        dlogging.disable_progress_bar()
        try:
            if cls is StableDiffusionPipeline:
                kwargs.update(safety_checker=None, requires_safety_checker=False)
            pipe = cls.from_single_file(str(self.path), **kwargs)
        finally:
            if was_enabled:
                dlogging.enable_progress_bar()
        pipe.to(self._device)
        self.pipe = pipe
        self.set_progress_bars(progress_bars)
        self._base_scheduler_config = dict(pipe.scheduler.config)
        self._lock = threading.Lock()
        self._interrupt = threading.Event()
        self._build_key_tables(file_keys)

    # --- key tables ---------------------------------------------------------------------------

    def _build_key_tables(self, file_keys: list[str]) -> None:
        from sd_mecha.extensions import model_configs

        self._mecha_config = model_configs.resolve(self._config_id)
        self._config_keys = self._mecha_config.keys()
        rules = km.derive_keymap(self._config_id, self.pipe.unet.config, self.pipe.vae.config)
        modules = {}
        for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
            module = getattr(self.pipe, name, None)
            if module is not None:
                modules[name] = module.state_dict(keep_vars=True)
        self._rules: dict[str, km.KeyRule] = {}
        self._live: dict[str, list[torch.Tensor]] = {}
        self._shapes: dict[str, torch.Size] = {}
        for key, rule in rules.items():
            try:
                tensors = [modules[t.component][t.name] for t in rule.targets]
            except KeyError:
                continue  # e.g. position_ids: a non-persistent buffer in transformers
            self._rules[key] = rule
            self._live[key] = tensors
            self._shapes[key] = km.ckpt_shape(rule, [t.shape for t in tensors])
        # config keys the file holds but no live tensor takes (logit_scale, EMA, ...): their
        # values stay in the file until read or written
        canonical = {self._mecha_config.resolve_alias(k): k for k in file_keys}
        self._file_keys = canonical  # config key -> the file's name for it
        self._file_side = {k: src for k, src in canonical.items()
                           if k in self._config_keys and k not in self._live}
        self._before_keep: dict[str, object] = {}  # keys a kept merge replaced -> their value before
        self._side: dict[str, torch.Tensor] = {}
        self._ordered = [k for k in self._config_keys if k in self._live or k in self._file_side]

    def _canonical(self, key: str) -> str:
        k = self._mecha_config.resolve_alias(key)
        if k not in self._config_keys:
            raise KeyError(f"{key!r} is not a key of model config {self._config_id}")
        return k

    def _key_set(self) -> set[str]:
        return set(self._ordered) | set(self._side)

    def _keys(self) -> list[str]:
        extra = [k for k in self._side if k not in self._live and k not in self._file_side]
        return self._ordered + extra

    def _read(self, k: str) -> torch.Tensor:
        if k in self._live:
            return km.join(self._rules[k], [t.detach() for t in self._live[k]])
        if k in self._side:
            return self._side[k]
        if k in self._file_side:
            self._side[k] = self._load_from_file(self._file_side[k])
            return self._side[k]
        raise KeyError(f"{k!r}: the loaded model has no such tensor")

    def _load_from_file(self, file_key: str) -> torch.Tensor:
        return next(self._file_tensors([file_key]))[1]

    def _file_tensors(self, file_keys: list[str]) -> Iterator[tuple[str, torch.Tensor]]:
        """(key, tensor) from the checkpoint file, one at a time, read into memory of their own
        (never mapped: the file may change later)."""
        if self.path.suffix == ".safetensors":
            yield from iter_tensors(self.path, file_keys)
            return
        sd = torch.load(str(self.path), map_location="cpu", mmap=True, weights_only=True)
        sd = sd.get("state_dict", sd)
        for key in file_keys:
            yield key, sd[key].clone()

    def _write_live(self, k: str, value: torch.Tensor) -> None:
        tensors = self._live[k]
        parts = km.split(self._rules[k], value, [t.shape for t in tensors])
        with torch.no_grad():
            for dst, src in zip(tensors, parts):
                dst.copy_(src)

    def _write_side(self, k: str, value: torch.Tensor) -> None:
        # no live tensor: keep the file's dtype when the file had the key
        old = self._side.get(k)
        if old is None and k in self._file_side:
            old = self._read(k)
        dtype = old.dtype if old is not None else value.dtype
        self._side[k] = value.detach().to("cpu", dtype=dtype, copy=True)

    # --- Host ---------------------------------------------------------------------------------

    def model_config(self) -> str:
        return self._config_id

    @property
    def device(self) -> torch.device:
        return self._device

    def short_hash(self) -> str:
        """First 10 hex digits of the file's sha256 (A1111's shorthash)."""
        return file_hash(self.path)

    def checkpoints(self) -> list[CheckpointRef]:
        short = self.short_hash()
        return [CheckpointRef(title=f"{self.path.name} [{short}]", path=str(self.path),
                              short_hash=short)]

    @contextlib.contextmanager
    def open_slot(self) -> Iterator[DiffusersSlot]:
        if not self._lock.acquire(blocking=False):
            raise RuntimeError("a slot is already open on this host")
        self._interrupt.clear()  # an interrupt belongs to the run it stopped, not to the next one
        slot = DiffusersSlot(self)
        try:
            yield slot
        finally:
            try:
                slot.restore()
            finally:
                self._lock.release()

    def release_kept(self) -> None:
        """The weights a kept merge replaced go back to the file's (bit-exact, as loaded)."""
        if not self._before_keep and self.kept_merge() is None:
            return
        if not self._lock.acquire(blocking=False):
            raise RuntimeError("a slot is already open on this host")
        try:
            before, self._before_keep = self._before_keep, {}
            from_file = sorted(k for k, old in before.items() if old is _IN_FILE)
            for k, old in before.items():
                if old is _IN_FILE and k not in self._live:
                    self._side.pop(k, None)  # read from the file again when asked for
                elif old is not _IN_FILE:
                    self._put_back(k, old)
            names = {self._file_keys[k]: k for k in from_file if k in self._live}
            for file_key, value in self._file_tensors(list(names)):
                self._write_live(names[file_key], value)
            self.mark_kept(None)
        finally:
            self._lock.release()

    def _put_back(self, k: str, old: object) -> None:
        if k in self._live:
            self._write_live(k, old)  # type: ignore[arg-type]
        elif old is _ABSENT:
            self._side.pop(k, None)
        else:
            self._side[k] = old  # type: ignore[assignment]

    def set_progress_bars(self, enabled: bool) -> None:
        self.pipe.set_progress_bar_config(disable=not enabled)

    def interrupt(self) -> None:
        """Ask a running :meth:`generate` to stop at the next image."""
        self._interrupt.set()

    def interrupted(self) -> bool:
        return self._interrupt.is_set()

    def samplers(self) -> list[str]:
        return list(_SAMPLERS)

    def schedulers(self) -> list[str]:
        return list(_SCHEDULES)

    def infotext(self, job: GenerationJob, seed: int) -> str:
        lines = [job.prompt]
        if job.negative_prompt:
            lines.append(f"Negative prompt: {job.negative_prompt}")
        params = [
            ("Steps", str(job.steps)), ("Sampler", job.sampler), ("Schedule type", job.scheduler),
            ("CFG scale", _fmt_number(job.cfg_scale)), ("Seed", str(seed)),
            ("Size", f"{job.width}x{job.height}"), ("Model", self.path.stem),
            *job.infotext_params.items(),
        ]
        lines.append(", ".join(f"{k}: {_quote(v)}" for k, v in params))
        return "\n".join(lines)

    def generate(self, job: GenerationJob,
                 should_stop: Callable[[], bool] = lambda: False) -> Iterator[GeneratedImage]:
        self.pipe.scheduler = make_scheduler(job.sampler, job.scheduler, self._base_scheduler_config)
        for i in range(job.n_images):
            if should_stop() or self.interrupted():
                return
            seed = job.seed + i
            # a CPU generator makes the initial noise independent of the device
            generator = torch.Generator().manual_seed(seed)
            # diffusers 0.31's exponential / beta sigmas read num_inference_steps before
            # set_timesteps assigns it (None on a fresh scheduler): give it the value up front
            self.pipe.scheduler.num_inference_steps = job.steps
            with torch.inference_mode():
                out = self.pipe(
                    prompt=job.prompt, negative_prompt=job.negative_prompt,
                    num_inference_steps=job.steps, guidance_scale=job.cfg_scale,
                    width=job.width, height=job.height, generator=generator, output_type="pil",
                )
            yield GeneratedImage(image=out.images[0], seed=seed, prompt=job.prompt,
                                 negative_prompt=job.negative_prompt,
                                 infotext=self.infotext(job, seed))
