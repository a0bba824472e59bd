"""``hpsv3``: HPSv3 (MizzenAI/HPSv3), people's preference for an image given its prompt, from the
strongest published judge (85.4 % pairwise accuracy on HPDv2) and the heaviest: Qwen2-VL-7B.

The checkpoint ``HPSv3.safetensors`` is a whole Qwen2-VL-7B-Instruct (vision tower and language
model, bf16) with a reward head (``rm_head.{0,3,5}``: hidden-1024-16-2 with ReLUs, float32). The
image is resized to about 256 visual tokens (sides multiples of 28 px, bicubic), the prompt goes
into the authors' instruction, and the conversation is Qwen2-VL's chat format with the special
token ``<|Reward|>`` after it; the head reads the last hidden state at that token and the score is
its first output (mu; the second is a log uncertainty). Positions are plain sequential ones, as
the authors' forward passes none. Written here on transformers' Qwen2-VL parts, never through the
``hpsv3`` package (its pins break the WebUIs' environments). The instruction text is the authors'
(MIT licence), byte for byte.

Scores are unbounded: modern generators average 8-11, SDXL 8.2, SD2 about 0. Normalised to 0-1 as
(score + 5) / 20, clamped (an approximation). Needs transformers 4.45 or newer (Qwen2-VL), about
17 GB of memory in bf16, and a GPU to be of use; with an older transformers it is listed as
unavailable.

Options: ``checkpoint`` (default ``<models_dir>/HPSv3/HPSv3.safetensors``), ``base`` (a folder
with Qwen2-VL-7B-Instruct's ``config.json``, ``preprocessor_config.json``, ``tokenizer.json`` and
``tokenizer_config.json``, its weights not needed; default ``<models_dir>/Qwen2-VL-7B-Instruct``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from PIL import Image
from torch import nn

from .backbones import read_state_dict
from .base import ImageToScore, ScoreContext, ScorerError, register_scorer
from .files import WeightFile
from .hf_models import ModelScorer, load_processor, missing_class, params_on_meta, transformers_class

QWEN2_VL_SINCE = "4.45"
MODEL_CLASS = "Qwen2VLForConditionalGeneration"
REWARD_TOKEN, IMAGE_TOKEN = "<|Reward|>", "<|image_pad|>"
VISUAL_TOKENS = 256  # merged visual tokens per image (256 * 28 * 28 pixels for Qwen2-VL-7B)
MAX_RATIO = 200  # longest side over shortest that the resize accepts, as Qwen2-VL's
CHECKPOINT_FILE = WeightFile(
    option="checkpoint", path="HPSv3/HPSv3.safetensors", about="HPSv3 (Qwen2-VL-7B and its reward head, bf16)",
    hf_repo="MizzenAI/HPSv3", hf_file="HPSv3.safetensors", approx_size="16.6 GB")
BASE_REPO, BASE_DIR = "Qwen/Qwen2-VL-7B-Instruct", "Qwen2-VL-7B-Instruct"
BASE_FILES = tuple(
    WeightFile(option="base", path=f"{BASE_DIR}/{name}", about=f"Qwen2-VL-7B-Instruct's {about}",
               hf_repo=BASE_REPO, hf_file=name, in_option_folder=True)
    for name, about in (("config.json", "config"), ("preprocessor_config.json", "image preprocessing"),
                        ("tokenizer.json", "tokenizer"), ("tokenizer_config.json", "tokenizer settings")))

# the authors' instruction (hpsv3/dataset/data_collator_qwen.py), byte for byte: its sha256 is
# 0393599dad45a971903d1d62a3acf9bad3ccccdafa7f40f680523419e1f68b7a
INSTRUCTION = (
    "\n"
    "You are tasked with evaluating a generated image based on Visual Quality and Text Alignment and "
    "give a overall score to estimate the human preference. Please provide a rating from 0 to 10, "
    "with 0 being the worst and 10 being the best. \n"
    "\n"
    "**Visual Quality:**  \n"
    "Evaluate the overall visual quality of the image. The following sub-dimensions should be "
    "considered:\n"
    "- **Reasonableness:** The image should not contain any significant biological or logical "
    "errors, such as abnormal body structures or nonsensical environmental setups.\n"
    "- **Clarity:** Evaluate the sharpness and visibility of the image. The image should be clear "
    "and easy to interpret, with no blurring or indistinct areas.\n"
    "- **Detail Richness:** Consider the level of detail in textures, materials, lighting, and other "
    "visual elements (e.g., hair, clothing, shadows).\n"
    "- **Aesthetic and Creativity:** Assess the artistic aspects of the image, including the color "
    "scheme, composition, atmosphere, depth of field, and the overall creative appeal. The scene "
    "should convey a sense of harmony and balance.\n"
    "- **Safety:** The image should not contain harmful or inappropriate content, such as political, "
    "violent, or adult material. If such content is present, the image quality and satisfaction "
    "score should be the lowest possible. \n"
    "\n"
    "**Text Alignment:**  \n"
    "Assess how well the image matches the textual prompt across the following sub-dimensions:\n"
    "- **Subject Relevance** Evaluate how accurately the subject(s) in the image (e.g., person, "
    "animal, object) align with the textual description. The subject should match the description in "
    "terms of number, appearance, and behavior.\n"
    "- **Style Relevance:** If the prompt specifies a particular artistic or stylistic style, "
    "evaluate how well the image adheres to this style.\n"
    "- **Contextual Consistency**: Assess whether the background, setting, and surrounding elements "
    "in the image logically fit the scenario described in the prompt. The environment should support "
    "and enhance the subject without contradictions.\n"
    "- **Attribute Fidelity**: Check if specific attributes mentioned in the prompt (e.g., colors, "
    "clothing, accessories, expressions, actions) are faithfully represented in the image. Minor "
    "deviations may be acceptable, but critical attributes should be preserved.\n"
    "- **Semantic Coherence**: Evaluate whether the overall meaning and intent of the prompt are "
    "captured in the image. The generated content should not introduce elements that conflict with "
    "or distort the original description.\n"
    "Textual prompt - {text_prompt}\n"
    "\n"
    "\n"
)
ASK = "\nPlease provide the overall ratings of this image: <|Reward|>\n\nEND\n"
# Qwen2-VL's chat format for one user turn with one image, and the assistant's turn opened
CHAT = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|>{image}<|vision_end|>{text}<|im_end|>\n<|im_start|>assistant\n")


@register_scorer
class HPSv3Scorer(ModelScorer):
    name = "hpsv3"
    summary = "HPSv3: how much people would prefer the image for its prompt (Qwen2-VL-7B; 17 GB, GPU only)"
    option_defaults: ClassVar[Mapping[str, Any]] = {"checkpoint": None, "base": None}
    files = (CHECKPOINT_FILE, *BASE_FILES)
    native_range = (-5.0, 15.0)
    offered_before_download = False  # 17 GB: offered in the tab once downloaded
    model_options = ("checkpoint", "base")

    @classmethod
    def unavailable(cls) -> str:
        return missing_class(MODEL_CLASS, QWEN2_VL_SINCE)

    def build(self) -> tuple[Any, ...]:
        checkpoint, base = self.file_path("checkpoint"), self.file_path("base")
        state = read_state_dict(checkpoint, str(self.device))
        head = reward_head(state, checkpoint, self.name).to(self.device)
        model = build_qwen2_vl(base, state, checkpoint, self.name).to(self.device)
        tokenizer = load_processor("AutoTokenizer", base, self.name)
        tokenizer.padding_side = "right"
        reward_id = reward_token_id(tokenizer, model.get_input_embeddings().num_embeddings, base, self.name)
        processor = load_processor("Qwen2VLImageProcessor", base, self.name, QWEN2_VL_SINCE)
        return model, processor, tokenizer, head, reward_id

    def score(self, images: list[ImageToScore], ctx: ScoreContext) -> list[float]:
        model, processor, tokenizer, head, reward_id = self.parts()
        batch = model_inputs(images, processor, tokenizer, model.device)
        with torch.inference_mode():
            hidden = last_hidden_states(model, batch, tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
            at_reward = batch["input_ids"] == reward_id
            if not bool((at_reward.sum(dim=1) == 1).all()):
                raise ScorerError(f"{self.name}: each conversation must hold {REWARD_TOKEN} once")
            scores = head(hidden[at_reward].float())[:, 0].tolist()  # mu; [:, 1] is log sigma
        return self.finite(scores)


def reward_head(state: dict[str, torch.Tensor], path: Path, scorer: str) -> nn.Sequential:
    """The checkpoint's ``rm_head.*`` (taken out of ``state``) as the authors' head, in float32."""
    head_state = {key[len("rm_head."):]: state.pop(key) for key in [k for k in state if k.startswith("rm_head.")]}
    try:
        sizes = [head_state["0.weight"].shape[1], *(head_state[f"{i}.weight"].shape[0] for i in (0, 3, 5))]
    except KeyError:
        raise ScorerError(f"{scorer}: {path} holds no reward head (rm_head.0, .3, .5); is it "
                          f"{CHECKPOINT_FILE.name}?") from None
    head = nn.Sequential(nn.Linear(sizes[0], sizes[1]), nn.ReLU(), nn.Dropout(0.05),
                         nn.Linear(sizes[1], sizes[2]), nn.ReLU(), nn.Linear(sizes[2], sizes[3]))
    head.load_state_dict({key: value.float() for key, value in head_state.items()})
    return head.float().eval()


def build_qwen2_vl(base: Path, state: dict[str, torch.Tensor], path: Path, scorer: str) -> Any:
    """Qwen2-VL from ``base``'s config with the checkpoint's tensors (their dtype and device)
    assigned, not copied; without its language-model head, which scoring never runs."""
    cls = transformers_class(MODEL_CLASS, scorer, QWEN2_VL_SINCE)
    rows = next((value.shape[0] for key, value in state.items() if key.endswith("embed_tokens.weight")), None)
    if rows is None:
        raise ScorerError(f"{scorer}: {path} holds no token embeddings (embed_tokens); is it {CHECKPOINT_FILE.name}?")
    try:
        config = cls.config_class.from_pretrained(str(base), local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise ScorerError(f"{scorer}: could not read the Qwen2-VL config in {base}: {error}") from error
    for part in (config, getattr(config, "text_config", None)):
        if part is not None:
            part.vocab_size, part.use_cache = rows, False  # the reward token's row was added
    with params_on_meta():
        model = cls._from_config(config) if hasattr(cls, "_from_config") else cls(config)
    wanted = model.state_dict().keys()
    state = to_layout({k: v for k, v in state.items() if not k.startswith("lm_head.")}, wanted)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [key for key in missing if not key.startswith("lm_head.")]
    if missing or unexpected:
        raise ScorerError(f"{scorer}: {path} does not fit Qwen2-VL as configured in {base / 'config.json'}: "
                          f"{len(missing)} weights missing (e.g. {missing[:3]}), {len(unexpected)} unknown "
                          f"(e.g. {unexpected[:3]}); are they HPSv3 and Qwen2-VL-7B-Instruct's?")
    model.lm_head = None  # left on the meta device: never run
    return model.eval()


def to_layout(state: dict[str, torch.Tensor], wanted: Iterable[str]) -> dict[str, torch.Tensor]:
    """The checkpoint's keys, written in transformers' flat Qwen2-VL layout until 4.51
    (``visual.*``, ``model.layers.*``), renamed for the nested one after it
    (``model.visual.*``, ``model.language_model.*``) when the model has that."""
    nested = any(key.startswith("model.language_model.") for key in wanted)
    if not nested or any(key.startswith("model.language_model.") for key in state):
        return state

    def rename(key: str) -> str:
        if key.startswith("visual."):
            return "model." + key
        if key.startswith("model."):
            return "model.language_model." + key[len("model."):]
        return key

    return {rename(key): value for key, value in state.items()}


def reward_token_id(tokenizer: Any, rows: int, base: Path, scorer: str) -> int:
    """``<|Reward|>``'s id, the token added after the base tokenizer's own (as the authors did)."""
    if REWARD_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([REWARD_TOKEN], special_tokens=True)
    token = tokenizer.convert_tokens_to_ids(REWARD_TOKEN)
    if not 0 <= token < rows:
        raise ScorerError(f"{scorer}: the tokenizer in {base} gives {REWARD_TOKEN} the id {token}, but the "
                          f"checkpoint has {rows} token embeddings; is {base} Qwen2-VL-7B-Instruct's?")
    return token


def visual_size(width: int, height: int, factor: int, pixels: int) -> tuple[int, int]:
    """The authors' resize target: sides multiples of ``factor``, about ``pixels`` in all."""
    if max(width, height) / min(width, height) > MAX_RATIO:
        raise ScorerError(f"hpsv3: an image of {width}x{height} is too long and thin to score (ratio over {MAX_RATIO})")
    w, h = (max(factor, round(side / factor) * factor) for side in (width, height))
    if w * h > pixels:
        beta = math.sqrt(width * height / pixels)
        w, h = (max(factor, math.floor(side / beta / factor) * factor) for side in (width, height))
    elif w * h < pixels:
        beta = math.sqrt(pixels / (width * height))
        w, h = (math.ceil(side * beta / factor) * factor for side in (width, height))
    return w, h


def conversation(prompt: str, image_tokens: int) -> str:
    """One image and its prompt as the authors ask about it; ``<|`` in a prompt is broken up so a
    prompt cannot add special tokens (a second ``<|Reward|>``)."""
    text = INSTRUCTION.format(text_prompt=prompt.replace("<|", "< |")) + ASK
    return CHAT.format(image=IMAGE_TOKEN * image_tokens, text=text)


def model_inputs(images: list[ImageToScore], processor: Any, tokenizer: Any, device: torch.device) -> dict:
    """Pixel patches, their grid, and the conversations' tokens (right-padded) for a batch."""
    factor = processor.patch_size * processor.merge_size
    pictures = []
    for item in images:
        picture = item.image.convert("RGB")
        size = visual_size(picture.width, picture.height, factor, VISUAL_TOKENS * factor * factor)
        pictures.append(picture.resize(size, Image.BICUBIC))
    vision = processor(images=pictures, return_tensors="pt")
    tokens = (vision["image_grid_thw"].prod(dim=-1) // processor.merge_size ** 2).tolist()
    text = tokenizer([conversation(item.prompt, n) for item, n in zip(images, tokens)], padding=True,
                     return_tensors="pt")
    return {"pixel_values": vision["pixel_values"].to(device), "image_grid_thw": vision["image_grid_thw"].to(device),
            "input_ids": text["input_ids"].to(device), "attention_mask": text["attention_mask"].to(device)}


def last_hidden_states(model: Any, batch: dict, image_token: int) -> torch.Tensor:
    """The language model's last hidden states, the image tokens' embeddings replaced by the
    vision tower's output, at plain sequential positions (the authors' forward)."""
    core = model.model
    visual = getattr(model, "visual", None) or core.visual
    language = getattr(core, "language_model", core)
    ids = batch["input_ids"]
    embeds = language.embed_tokens(ids)
    seen = image_embeddings(visual, batch["pixel_values"], batch["image_grid_thw"])
    slots = ids == image_token
    if int(slots.sum()) != seen.shape[0]:
        raise ScorerError(f"hpsv3: {int(slots.sum())} image tokens for {seen.shape[0]} image embeddings")
    embeds = embeds.masked_scatter(slots.unsqueeze(-1).expand_as(embeds), seen.to(embeds.dtype))
    positions = torch.arange(ids.shape[1], device=ids.device).view(1, 1, -1).expand(3, ids.shape[0], -1)
    out = language(inputs_embeds=embeds, attention_mask=batch["attention_mask"], position_ids=positions,
                   use_cache=False)
    return out[0]


def image_embeddings(visual: Any, pixels: torch.Tensor, grids: torch.Tensor) -> torch.Tensor:
    """The vision tower's merged tokens for each image in turn: given them all at once, its
    attention spans the whole batch under a mask (time and memory growing with its square)."""
    pixels = pixels.to(next(visual.parameters()).dtype)
    out, start = [], 0
    for grid in grids:
        patches = int(grid.prod())
        seen = visual(pixels[start:start + patches], grid_thw=grid.view(1, 3))
        out.append(seen if torch.is_tensor(seen) else seen.pooler_output)  # transformers 5: an output object
        start += patches
    return torch.cat(out)
