from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from sd_optim import tiny_models as tm
from sd_optim.hosts import diffusers_keymap as km
from sd_optim.hosts.base import GenerationJob


def _sd_mecha_config_id(path) -> str:
    import sd_mecha
    from sd_mecha.graph_finalization import open_graph

    with open_graph(sd_mecha.model(path)) as graph:
        return graph.finalize_root().model_config.identifier


@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
def test_sd_mecha_infers_config_and_finds_every_required_key(arch, request):
    from sd_mecha.extensions import model_configs

    path = request.getfixturevalue(f"tiny_{arch}_paths")[0]
    cfg_id = tm.config_id(arch)
    assert _sd_mecha_config_id(path) == cfg_id
    config = model_configs.resolve(cfg_id)
    sd = load_file(path)
    required = {k for k, meta in config.keys().items() if not meta.optional}
    assert required <= set(sd), sorted(required - set(sd))[:5]
    assert set(sd) <= set(config.keys()), sorted(set(sd) - set(config.keys()))[:5]
    for k, v in sd.items():
        assert v.dtype == torch.float32, k
        assert v.ndim == len(config.keys()[k].shape), k  # real ranks (conv 1x1 stay 4-d)
    if arch == "sd1":
        assert len(sd) == len(required) == 1130


def test_sdxl_depth_is_real(tiny_sdxl_paths):
    sd = load_file(tiny_sdxl_paths[0])
    deepest = {k.split(".")[6] for k in sd
               if k.startswith("model.diffusion_model.input_blocks.7.1.transformer_blocks.")}
    assert len(deepest) == 10
    clip_g = {k.split(".")[6] for k in sd
              if k.startswith("conditioner.embedders.1.model.transformer.resblocks.")}
    assert len(clip_g) == 32
    assert sd["conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"].shape[0] \
        == 3 * sd["conditioner.embedders.1.model.text_projection"].shape[0]


def test_build_is_deterministic_and_seeds_differ(tmp_path, tiny_sd1_paths):
    again = load_file(tm.build_tiny_checkpoint("sd1", tmp_path / "a.safetensors", seed=0))
    first = load_file(tiny_sd1_paths[0])
    other = load_file(tiny_sd1_paths[1])
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert sum(not torch.equal(first[k], other[k]) for k in first) > 0.9 * len(first)


@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
def test_no_all_zero_biases(arch, request):
    sd = load_file(request.getfixturevalue(f"tiny_{arch}_paths")[0])
    zero = [k for k, v in sd.items() if k.endswith("bias") and not v.any()]
    assert not zero, zero[:5]


def test_tokenizer_matches_clip_vocabulary(tiny_sd1_config_dir, tiny_sdxl_config_dir):
    from transformers import CLIPTokenizer

    for folder, sub in [(tiny_sd1_config_dir, "tokenizer"), (tiny_sdxl_config_dir, "tokenizer_2")]:
        tok = CLIPTokenizer.from_pretrained(folder / sub, local_files_only=True)
        assert tok.model_max_length == 77
        # ids of OpenAI CLIP's vocabulary
        assert tok("a photo of a cat, masterpiece").input_ids == [
            49406, 320, 1125, 539, 320, 2368, 267, 12066, 49407]


def test_config_folder_is_reused(tiny_models_dir, tiny_sd1_config_dir):
    stamp = tiny_sd1_config_dir / "model_index.json"
    before = stamp.stat().st_mtime_ns
    assert tm.tiny_diffusers_config("sd1", tiny_sd1_config_dir) == tiny_sd1_config_dir
    assert stamp.stat().st_mtime_ns == before


@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
def test_from_single_file_reads_weights_back_exactly(arch, request):
    host = request.getfixturevalue(f"{arch}_host")
    sd = load_file(request.getfixturevalue(f"tiny_{arch}_paths")[0])
    pipe = host.pipe
    rules = km.derive_keymap(tm.config_id(arch), pipe.unet.config, pipe.vae.config)
    comps = {n: getattr(pipe, n).state_dict() for n in
             ("unet", "vae", "text_encoder", "text_encoder_2") if getattr(pipe, n, None) is not None}
    back = km.to_checkpoint(rules, comps)
    assert set(back) | {"conditioner.embedders.1.model.logit_scale"} >= set(sd)
    for k, v in sd.items():
        if k in back:
            assert torch.equal(back[k], v), k
    # every diffusers tensor is fed by some file key (none left at its random init)
    fed = {(t.component, t.name) for k in sd if k in rules for t in rules[k].targets}
    for name, state in comps.items():  # (position_ids: a buffer transformers 4.30 fills itself)
        assert not [n for n in state if (name, n) not in fed and not n.endswith("position_ids")], name


def _image(host, **kw) -> np.ndarray:
    job = GenerationJob(prompt="a cat", seed=3, steps=2, width=tm.TINY_SIZE,
                        height=tm.TINY_SIZE, sampler="Euler", **kw)
    return np.asarray(next(iter(host.generate(job))).image).astype(np.float64)


def test_blends_render_measurably_different(sd1_host, tiny_sd1_paths):
    a, b = (load_file(p) for p in tiny_sd1_paths[:2])
    images = []
    with sd1_host.open_slot() as slot:
        for alpha in (0.5, 0.7):
            for k in a:
                slot[k] = torch.lerp(a[k], b[k], alpha)
            images.append(_image(sd1_host))
    diff = np.abs(images[0] - images[1]).mean()
    assert diff > 2.0, diff  # mean absolute difference, 0-255 scale
    assert images[0].std() > 10 and images[1].std() > 10  # not flat / saturated
