"""Tiny random weights for the scorers, written to disk the way the real files are: what the
tests score with, and what ``bench scorers`` times when no real weights are given.

The CLIP here is a real open_clip ``CLIP`` (a ViT image tower and a text tower), only narrow and
shallow: width 64 keeps one attention head per tower, because ``load_openai_model`` infers
``heads = width // 64`` from an OpenAI archive.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

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
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "CLIPTokenizer",
                                                              "model_max_length": 77}), encoding="utf-8")
    return folder


# --- a whole scorer models folder of tiny weights, for the bench ---------------------------------


def _save_state(state: dict[str, torch.Tensor], path: Path) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path


def _tiny_linear_stack(sizes: list[int], prefix: str, indices: list[int]) -> dict[str, torch.Tensor]:
    """Linear layers ``<prefix>.<index>`` (the indices between them are dropouts)."""
    state = {}
    for index, n_in, n_out in zip(indices, sizes, sizes[1:]):
        state.update({f"{prefix}.{index}.{k}": v for k, v in nn.Linear(n_in, n_out).state_dict().items()})
    return state


def write_tiny_scorers(folder: Path, seed: int = 0) -> dict[str, dict[str, object]]:
    """Tiny weights for every neural scorer this environment can run, laid out in ``folder`` as
    ``scorers download`` would place the real ones; the options each scorer needs beside the
    folder (the tiny open_clip architecture's name). ``reference_clip`` gets a ``refs`` folder."""
    torch.manual_seed(seed)
    arch = register_tiny_clip_config(folder / "open_clip_configs")
    clip = {"clip_arch": arch}
    save_safetensors(make_tiny_clip(seed), folder / "clip" / "ViT-L-14-openai.safetensors")
    save_safetensors(make_tiny_clip(seed + 1), folder / "clip" / "ViT-B-32-openai.safetensors")
    save_head(make_tiny_head(TINY_EMBED_DIM, seed), folder / "laion_aesthetic" / "sac+logos+ava1-l14-linearMSE.pth")
    save_head(make_tiny_head(TINY_EMBED_DIM, seed + 1), folder / "laion_chad" / "chadscorer.pth")
    wd = {f"fc{i + 1}.{k}": v for i, (a, b) in enumerate([(TINY_EMBED_DIM, 12), (12, 6), (6, 1)])
          for k, v in nn.Linear(a, b).state_dict().items()}
    _save_state(wd, folder / "wd_aesthetic" / "aes-B32-v0.pth")
    import open_clip

    plain = open_clip.create_model(arch).eval()  # HPS: LAION's ViT-H-14 uses plain GELU
    for name in ("HPS_v2_compressed.pt", "HPS_v2.1_compressed.pt"):
        _save_state({"state_dict": plain.state_dict()}, folder / "hps" / name)
    refs = folder / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    for i in range(8):
        random_image(seed + i).save(refs / f"{i}.png")
    options: dict[str, dict[str, object]] = {
        "laion_aesthetic": clip, "laion_chad": clip, "clip_score": clip, "consistency": clip,
        "reference_clip": {**clip, "folder": str(refs)}, "wd_aesthetic": clip, "hpsv2": clip, "hpsv2_1": clip}
    options.update(_write_tiny_hf_scorers(folder))
    return options


def _write_tiny_hf_scorers(folder: Path) -> dict[str, dict[str, object]]:
    """The transformers-based scorers' tiny folders (SigLIP only where transformers has it)."""
    import transformers

    save_tiny_hf_clip(folder / "clip-vit-large-patch14-336")
    city = {"up.0": (TINY_EMBED_DIM, 24), "up.1.long.0": (24, 24), "up.1.long.2": (24, 24),
            "up.1.long.4": (24, 24), "down.0": (24, 12), "down.1": (12, 8), "down.4": (8, 4), "down.5": (4, 1)}
    _save_state({f"{layer}.{k}": v for layer, (a, b) in city.items() for k, v in nn.Linear(a, b).state_dict().items()},
                folder / "city_aesthetics" / "CityAesthetics-Anime-v1.8.safetensors")
    save_tiny_hf_clip(folder / "PickScore_v1", safetensors=True)
    processor = write_clip_tokenizer(folder / "CLIP-ViT-H-14-laion2B-s32B-b79K")
    (folder / "PickScore_v1" / "preprocessor_config.json").replace(processor / "preprocessor_config.json")
    write_tiny_blip_itm(folder / "blip-itm-large-coco")
    _write_tiny_image_reward(folder)
    options: dict[str, dict[str, object]] = {"city_aesthetics": {}, "pickscore": {}, "blip_itm": {},
                                             "image_reward": {}}
    if hasattr(transformers, "Qwen2VLForConditionalGeneration"):  # transformers 4.45 or newer
        write_tiny_hpsv3(folder)
        options["hpsv3"] = {}
    if hasattr(transformers, "SiglipModel"):
        _write_tiny_siglip(folder / "siglip-so400m-patch14-384")
        _save_state({k: v.to(torch.bfloat16) for k, v in
                     _tiny_linear_stack([32, 16, 8, 4, 2, 1], "scoring_head", [0, 2, 4, 6, 8]).items()},
                    folder / "aesthetic_v2_5" / "aesthetic_predictor_v2_5.pth")
        options["aesthetic_v2_5"] = {}
    return options


def _write_tiny_siglip(folder: Path) -> None:
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    config = SiglipConfig(text_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1,
                                       "num_attention_heads": 4, "vocab_size": 100},
                          vision_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                                         "num_attention_heads": 4, "image_size": 32, "patch_size": 8})
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(folder))
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(str(folder))
    _save_state(SiglipModel(config).state_dict(), folder / "model.safetensors")


_WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "cat", "dog", "red", "fox", "on", "the", "hill",
          "photo", "of", "house", "by", "lake"]


def write_tiny_blip_itm(folder: Path) -> None:
    from transformers import BertTokenizer, BlipConfig, BlipForImageTextRetrieval, BlipImageProcessor

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(_WORDS) + "\n", encoding="utf-8")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(str(folder))
    config = BlipConfig(text_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                                     "num_attention_heads": 4, "vocab_size": len(_WORDS), "encoder_hidden_size": 32},
                        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                                       "num_attention_heads": 4, "image_size": 32, "patch_size": 8},
                        projection_dim=16)
    config.save_pretrained(str(folder))
    BlipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(str(folder))
    _save_state(BlipForImageTextRetrieval(config).state_dict(), folder / "model.safetensors")


# transformers' BlipVisionModel keys -> the original BLIP ViT's (ImageReward.pt's layout)
_ORIGINAL_VISION_KEYS = [
    (r"^embeddings\.class_embedding$", "cls_token"), (r"^embeddings\.position_embedding$", "pos_embed"),
    (r"^embeddings\.patch_embedding\.", "patch_embed.proj."),
    (r"^encoder\.layers\.(\d+)\.layer_norm1\.", r"blocks.\1.norm1."),
    (r"^encoder\.layers\.(\d+)\.layer_norm2\.", r"blocks.\1.norm2."),
    (r"^encoder\.layers\.(\d+)\.self_attn\.qkv\.", r"blocks.\1.attn.qkv."),
    (r"^encoder\.layers\.(\d+)\.self_attn\.projection\.", r"blocks.\1.attn.proj."),
    (r"^encoder\.layers\.(\d+)\.mlp\.", r"blocks.\1.mlp."), (r"^post_layernorm\.", "norm."),
]


def original_vision_key(key: str) -> str:
    import re

    for pattern, replacement in _ORIGINAL_VISION_KEYS:
        if re.match(pattern, key):
            return re.sub(pattern, replacement, key)
    raise KeyError(key)


def _write_tiny_image_reward(folder: Path) -> None:
    """``ImageReward/ImageReward.pt`` in the original key layout, its ``med_config.json``, and a
    ``bert-base-uncased/vocab.txt``."""
    from transformers import BlipTextConfig, BlipVisionConfig, BlipVisionModel
    from transformers.models.blip.modeling_blip_text import BlipTextModel

    med = {"vocab_size": len(_WORDS) + 2, "hidden_size": 32, "encoder_width": 64, "intermediate_size": 37,
           "num_attention_heads": 4, "num_hidden_layers": 2, "max_position_embeddings": 40,
           "layer_norm_eps": 1e-12, "hidden_act": "gelu"}
    vision = BlipVisionModel(BlipVisionConfig(hidden_size=64, intermediate_size=37, num_hidden_layers=2,
                                              num_attention_heads=1, image_size=32, patch_size=8, layer_norm_eps=1e-6))
    text = BlipTextModel(BlipTextConfig(vocab_size=med["vocab_size"], hidden_size=32, encoder_hidden_size=64,
                                        intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                                        max_position_embeddings=40), add_pooling_layer=False)
    state = {f"blip.visual_encoder.{original_vision_key(k)}": v for k, v in vision.state_dict().items()}
    state.update({f"blip.text_encoder.{k}": v for k, v in text.state_dict().items()})
    state.update(_tiny_linear_stack([32, 16, 8, 4, 2, 1], "mlp.layers", [0, 2, 4, 6, 7]))
    _save_state(state, folder / "ImageReward" / "ImageReward.pt")
    (folder / "ImageReward" / "med_config.json").write_text(json.dumps(med), encoding="utf-8")
    (folder / "bert-base-uncased").mkdir(parents=True, exist_ok=True)
    (folder / "bert-base-uncased" / "vocab.txt").write_text("\n".join(_WORDS) + "\n", encoding="utf-8")


_QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]


def write_tiny_qwen_tokenizer(folder: Path) -> Any:
    """A byte-level BPE tokenizer (one token per byte, no merges) with Qwen2-VL's special tokens,
    saved as Qwen's is: ``tokenizer.json`` and a ``tokenizer_config.json`` naming Qwen2Tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        additional_special_tokens=_QWEN_SPECIALS[1:])
    tokenizer.add_special_tokens({"additional_special_tokens": _QWEN_SPECIALS[1:]})
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(folder))
    settings = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    settings["tokenizer_class"] = "Qwen2Tokenizer"
    (folder / "tokenizer_config.json").write_text(json.dumps(settings), encoding="utf-8")
    return tokenizer


def write_tiny_hpsv3(folder: Path, seed: int = 0) -> None:
    """``HPSv3/HPSv3.safetensors`` (a tiny Qwen2-VL with one embedding row more than the tokenizer
    has, for ``<|Reward|>``; bf16 in transformers 4.45-4.51's flat key layout; a float32
    ``rm_head``) and ``Qwen2-VL-7B-Instruct/`` (config, image preprocessing, tokenizer)."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessor

    base = folder / "Qwen2-VL-7B-Instruct"
    tokenizer = write_tiny_qwen_tokenizer(base)
    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in _QWEN_SPECIALS}
    config = Qwen2VLConfig(
        vocab_size=len(tokenizer) + 8, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, rope_scaling={"type": "mrope", "mrope_section": [2, 1, 1]},
        tie_word_embeddings=False, bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"], image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        vision_config={"depth": 2, "embed_dim": 16, "hidden_size": 32, "num_heads": 2, "mlp_ratio": 2,
                       "patch_size": 4, "spatial_merge_size": 2, "temporal_patch_size": 2})
    config.save_pretrained(str(base))  # the base model's vocabulary: more rows than the checkpoint's
    Qwen2VLImageProcessor(min_pixels=64, max_pixels=1 << 20, patch_size=4, temporal_patch_size=2,
                          merge_size=2).save_pretrained(str(base))
    torch.manual_seed(seed)
    config.vocab_size = len(tokenizer) + 1
    if hasattr(config, "text_config"):
        config.text_config.vocab_size = config.vocab_size
    model = Qwen2VLForConditionalGeneration(config)
    state = {}
    for key, value in model.state_dict().items():  # the flat layout, whichever transformers wrote it
        key = key.replace("model.visual.", "visual.", 1).replace("model.language_model.", "model.", 1)
        state[key] = (value + 0.02 * torch.randn_like(value) if key.endswith("bias") else value).to(torch.bfloat16)
    state.update({k: v.float() for k, v in _tiny_linear_stack([32, 16, 8, 2], "rm_head", [0, 3, 5]).items()})
    _save_state(state, folder / "HPSv3" / "HPSv3.safetensors")
