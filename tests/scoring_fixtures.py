"""Tiny random weights for the scorers, written to disk the way the real files are.

The CLIP here is a real open_clip ``CLIP`` (a ViT image tower and a text tower), only narrow and
shallow: width 64 keeps one attention head per tower, because ``load_openai_model`` infers
``heads = width // 64`` from an OpenAI archive.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

TINY_CLIP_ARCH = "sdopt-tiny-ViT"
TINY_EMBED_DIM = 16
TINY_CLIP_CONFIG = {
    "embed_dim": TINY_EMBED_DIM,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
}


def register_tiny_clip_config(folder: Path) -> str:
    """Make ``TINY_CLIP_ARCH`` an open_clip model name, as a user's custom JSON config would."""
    import open_clip

    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{TINY_CLIP_ARCH}.json").write_text(json.dumps(TINY_CLIP_CONFIG))
    open_clip.add_model_config(folder)
    return TINY_CLIP_ARCH


def make_tiny_clip(seed: int) -> nn.Module:
    """A random tiny CLIP with QuickGELU, like OpenAI's (weights differ per seed)."""
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.create_model(TINY_CLIP_ARCH, force_quick_gelu=True)
    with torch.no_grad():
        # open_clip zero-initialises biases; real weights never are.
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.normal_(0.0, 0.02)
    return model.eval()


def save_state_dict(model: nn.Module, path: Path) -> Path:
    """Like ``open_clip_pytorch_model.bin``: a plain ``torch.save`` of the state dict."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def save_safetensors(model: nn.Module, path: Path) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def save_openai_archive(model: nn.Module, path: Path) -> Path:
    """Like OpenAI's ``ViT-L-14.pt``: a traced TorchScript archive of the whole CLIP.

    open_clip keeps the text attention mask as a buffer, which OpenAI's archive does not have as
    a state-dict entry; it is turned into a plain attribute so the trace bakes it in instead.
    """
    import copy

    model = copy.deepcopy(model)
    mask = model._buffers.pop("attn_mask")
    model.attn_mask = mask
    image = torch.zeros(1, 3, 32, 32)
    text = torch.zeros(1, 77, dtype=torch.long)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, (image, text), check_trace=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    traced.save(str(path))
    return path


def make_tiny_head(
    embed_dim: int, seed: int, hidden: tuple[int, ...] = (32, 8, 4, 2)
) -> nn.Sequential:
    """The aesthetic MLP's layout at a small width: Linear, Dropout x3, then two Linears."""
    torch.manual_seed(seed)
    a, b, c, d = hidden
    return nn.Sequential(
        nn.Linear(embed_dim, a),
        nn.Dropout(0.2),
        nn.Linear(a, b),
        nn.Dropout(0.2),
        nn.Linear(b, c),
        nn.Dropout(0.1),
        nn.Linear(c, d),
        nn.Linear(d, 1),
    ).eval()


def save_head(head: nn.Sequential, path: Path) -> Path:
    """Keys ``layers.N.*`` as in ``sac+logos+ava1-l14-linearMSE.pth``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({f"layers.{key}": value for key, value in head.state_dict().items()}, path)
    return path


def random_image(seed: int, size: tuple[int, int] = (48, 40)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def save_tiny_hf_clip(folder: Path, seed: int = 0, *, safetensors: bool = False, image_size: int = 32):
    """A tiny transformers CLIPModel saved as a Hugging Face CLIP repo is laid out: ``config.json``
    (the whole CLIPConfig), ``preprocessor_config.json``, and the weights of the whole model
    (``pytorch_model.bin``, or ``model.safetensors``). Returns the model."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
                     "vocab_size": 49408, "max_position_embeddings": 77},
        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
                       "image_size": image_size, "patch_size": 8},
        projection_dim=TINY_EMBED_DIM)
    model = CLIPModel(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(folder))
    CLIPImageProcessor(size={"shortest_edge": image_size},
                       crop_size={"height": image_size, "width": image_size}).save_pretrained(str(folder))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if safetensors:
        from safetensors.torch import save_file

        save_file(state, str(folder / "model.safetensors"))
    else:
        torch.save(state, folder / "pytorch_model.bin")
    return model


def write_clip_tokenizer(folder: Path) -> Path:
    """A Hugging Face CLIP tokenizer's ``vocab.json`` and ``merges.txt``, built from the BPE
    vocabulary open_clip ships (the same 49408 tokens OpenAI's and LAION's CLIPs use)."""
    import gzip

    import open_clip
    from open_clip.tokenizer import bytes_to_unicode

    bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    with gzip.open(bpe) as handle:
        lines = handle.read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n",
                                       encoding="utf-8")
    return folder
