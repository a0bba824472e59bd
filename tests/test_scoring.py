"""Scorers: registry, options, combination, and each built-in scorer on real (tiny) weights."""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter
from scoring_fixtures import (
    TINY_EMBED_DIM,
    make_tiny_clip,
    make_tiny_head,
    random_image,
    register_tiny_clip_config,
    save_head,
    save_openai_archive,
    save_safetensors,
    save_state_dict,
    save_tiny_hf_clip,
    write_clip_tokenizer,
)

from sd_optim.scoring import (
    MEANS,
    BackboneCache,
    ImageToScore,
    ScoreContext,
    Scorer,
    ScorerError,
    available_scorers,
    build_scorers,
    combine_trial,
    get_scorer_class,
    register_scorer,
    weighted_mean,
)
from sd_optim.scoring import base as scoring_base
from sd_optim.scoring.degenerate import degeneracy, is_degenerate
from sd_optim.scoring.laion_aesthetic import HEAD_FILENAME, LaionAestheticScorer
from sd_optim.scoring.noise import noise_sigma

CPU = torch.device("cpu")
CTX = ScoreContext(device=CPU)


def items(images, payload="p", start=0):
    return [
        ImageToScore(
            image=im, prompt="a cat", negative_prompt="", seed=i, payload=payload, index=start + i
        )
        for i, im in enumerate(images)
    ]


def build(name, options=None, models_dir=None, backbones=None):
    return get_scorer_class(name)(
        options or {}, models_dir=models_dir, device=CPU, backbones=backbones or BackboneCache()
    )


@dataclass
class Spec:
    name: str
    options: dict = field(default_factory=dict)


# --- registry ------------------------------------------------------------------------------


@pytest.fixture
def scratch_registry(monkeypatch):
    monkeypatch.setattr(scoring_base, "_REGISTRY", dict(scoring_base._REGISTRY))


def _scorer_class(name):
    class Constant(Scorer):
        def score(self, images, ctx):
            return [1.0] * len(images)

    Constant.name = name
    return Constant


def test_builtin_scorers_are_registered():
    assert {"image_stats", "laion_aesthetic", "reference"} <= set(available_scorers())


def test_register_same_class_twice_is_a_noop(scratch_registry):
    cls = _scorer_class("constant")
    assert register_scorer(cls) is cls
    assert register_scorer(cls) is cls  # a WebUI "Reload UI" re-running the decorator
    assert get_scorer_class("constant") is cls


def test_register_other_class_under_taken_name_raises(scratch_registry):
    register_scorer(_scorer_class("constant"))
    with pytest.raises(ScorerError, match="'constant' is already registered"):
        register_scorer(_scorer_class("constant"))


def test_register_rejects_non_scorers(scratch_registry):
    with pytest.raises(TypeError):
        register_scorer(object)
    with pytest.raises(TypeError, match="name"):
        register_scorer(type("Nameless", (Scorer,), {"score": lambda self, images, ctx: []}))


def test_unknown_scorer_names_the_nearest():
    with pytest.raises(ScorerError) as error:
        get_scorer_class("laion_aestetic")
    message = str(error.value)
    assert "'laion_aestetic'" in message
    assert "Did you mean 'laion_aesthetic'?" in message
    assert "image_stats" in message and "reference" in message


# --- options -------------------------------------------------------------------------------


def test_unknown_option_is_named_with_the_nearest():
    with pytest.raises(ScorerError) as error:
        build("image_stats", {"sharpnes": 2.0})
    message = str(error.value)
    assert "'image_stats'" in message and "'sharpnes'" in message and "'sharpness'" in message


@pytest.mark.parametrize(
    "name, options, fragment",
    [
        ("image_stats", {"contrast": "high"}, "'contrast' = 'high' must be a number"),
        ("image_stats", {"contrast": -1}, "'contrast' = -1.0 must be >= 0"),
        ("image_stats", {"contrast": float("nan")}, "finite"),
        ("image_stats", {"sharpness": 0, "contrast": 0, "colorfulness": 0}, "at least one"),
        ("reference", {}, "'folder' = None is required"),
        (
            "laion_aesthetic",
            {"clip_quick_gelu": "yes"},
            "'clip_quick_gelu' = 'yes' must be true or false",
        ),
        ("laion_aesthetic", {"head": 3}, "'head' = 3 must be a file or folder path"),
    ],
)
def test_bad_option_values_are_named(name, options, fragment):
    with pytest.raises(ScorerError, match=f"scorer '{name}'") as error:
        build(name, options)
    assert fragment in str(error.value)


def test_build_scorers_shares_one_backbone_cache(tmp_path):
    scorers = build_scorers(
        [Spec("image_stats", {"contrast": 2}), Spec("laion_aesthetic")],
        models_dir=tmp_path,
        device="cpu",
    )
    assert [s.name for s in scorers] == ["image_stats", "laion_aesthetic"]
    assert scorers[0].options["contrast"] == 2.0
    assert scorers[0].backbones is scorers[1].backbones
    assert scorers[1].backbone == "clip-vit-l-14"


# --- combination ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values, weights, kind, expected",
    [
        ([1, 3], [1, 1], "arithmetic", 2.0),
        ([1, 3], [1, 3], "arithmetic", 2.5),
        ([1, 4], [1, 1], "geometric", 2.0),
        ([2, 8], [1, 2], "geometric", 2 ** (7 / 3)),
        ([1, 7], [1, 1], "quadratic", 5.0),
        ([1, 7], [3, 1], "quadratic", math.sqrt(13)),
        ([5, -2], [1, 0], "geometric", 5.0),  # a zero weight takes no part at all
        ([-1, -3], [1, 1], "arithmetic", -2.0),
        ([0.5], [7], "quadratic", 0.5),
    ],
)
def test_weighted_mean_table(values, weights, kind, expected):
    assert weighted_mean(values, weights, kind) == pytest.approx(expected, rel=1e-12)


def test_means_order_as_power_means():
    values, weights = [0.2, 0.9, 0.5], [1, 2, 1]
    means = {kind: weighted_mean(values, weights, kind) for kind in MEANS}
    assert means["geometric"] < means["arithmetic"] < means["quadratic"]


@pytest.mark.parametrize(
    "values, weights, kind, fragment",
    [
        ([1.0, -0.5], [1, 1], "geometric", "-0.5"),
        ([0.0, 2.0], [1, 1], "geometric", "got 0.0"),
        ([-0.25, 2.0], [1, 1], "quadratic", "-0.25"),
        ([1.0, 2.0], [0, 0], "arithmetic", "sum to more than 0"),
        ([1.0, 2.0], [1, -1], "arithmetic", "weight -1"),
        ([1.0, 2.0], [1], "arithmetic", "2 values but 1 weights"),
        ([1.0, float("nan")], [1, 1], "arithmetic", "nan"),
        ([1.0], [1], "harmonic", "unknown mean 'harmonic'"),
    ],
)
def test_weighted_mean_errors(values, weights, kind, fragment):
    with pytest.raises(ValueError) as error:
        weighted_mean(values, weights, kind)
    assert fragment in str(error.value)


def test_combine_trial_with_scorer_filters():
    per_payload = {
        "portraits": {"aes": [6.0, 8.0], "stats": [0.5, 0.5]},  # aes mean 7
        "landscapes": {"aes": [4.0]},  # filtered: only "aes" scores this prompt set
    }
    trial, by_payload = combine_trial(
        per_payload,
        scorer_weights={"aes": 3.0, "stats": 1.0},
        payload_weights={"portraits": 1.0, "landscapes": 2.0},
        scorer_mean="arithmetic",
        payload_mean="arithmetic",
    )
    assert by_payload == pytest.approx({"portraits": (3 * 7 + 0.5) / 4, "landscapes": 4.0})
    assert trial == pytest.approx((5.375 + 2 * 4.0) / 3)


def test_combine_trial_geometric_then_quadratic():
    trial, by_payload = combine_trial(
        {"a": {"x": [2.0, 6.0], "y": [1.0]}, "b": {"x": [3.0], "y": [3.0]}},
        scorer_weights={"x": 1.0, "y": 1.0},
        payload_weights={"a": 1.0, "b": 1.0},
        scorer_mean="geometric",
        payload_mean="quadratic",
    )
    assert by_payload == pytest.approx({"a": 2.0, "b": 3.0})
    assert trial == pytest.approx(math.sqrt((4 + 9) / 2))


def test_combine_trial_geometric_error_names_payload_and_value():
    with pytest.raises(ValueError) as error:
        combine_trial(
            {"night": {"x": [-1.5, -0.5], "y": [2.0]}},
            {"x": 1.0, "y": 1.0},
            {"night": 1.0},
            "geometric",
            "arithmetic",
        )
    assert "'night'" in str(error.value) and "-1.0" in str(error.value)


@pytest.mark.parametrize(
    "per_payload, scorer_weights, payload_weights, fragment",
    [
        ({"a": {"x": [1.0], "z": [1.0]}}, {"x": 1.0}, {"a": 1.0}, "scorer(s) ['z']"),
        ({"a": {"x": [1.0]}}, {"x": 1.0}, {}, "prompt set(s) ['a']"),
        ({"a": {"x": []}}, {"x": 1.0}, {"a": 1.0}, "'x' returned no scores"),
        ({"a": {}}, {}, {"a": 1.0}, "no scorer scored it"),
        ({}, {}, {}, "no prompt sets"),
    ],
)
def test_combine_trial_config_mistakes(per_payload, scorer_weights, payload_weights, fragment):
    with pytest.raises(ValueError) as error:
        combine_trial(per_payload, scorer_weights, payload_weights, "arithmetic", "arithmetic")
    assert fragment in str(error.value)


# --- image_stats ---------------------------------------------------------------------------


def _checkerboard(size=64, cell=4):
    yy, xx = np.mgrid[0:size, 0:size]
    on = ((yy // cell + xx // cell) % 2).astype(bool)
    array = np.zeros((size, size, 3), np.uint8)
    array[on] = (250, 30, 40)
    array[~on] = (10, 60, 240)
    return Image.fromarray(array)


def test_image_stats_ranks_sharp_colourful_above_blurred_above_grey():
    sharp = _checkerboard()
    blurred = sharp.filter(ImageFilter.GaussianBlur(3))
    grey = Image.new("RGB", (64, 64), (128, 128, 128))
    scores = build("image_stats").score(items([grey, sharp, blurred]), CTX)
    assert scores[0] == pytest.approx(0.0, abs=1e-6)
    assert scores[1] > scores[2] > scores[0]
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_image_stats_option_weights_select_measures():
    # Left half black, right half white: luminance std 0.5, so contrast is exactly 1.
    array = np.zeros((32, 32, 3), np.uint8)
    array[:, 16:] = 255
    image = Image.fromarray(array)
    only_contrast = build("image_stats", {"sharpness": 0, "colorfulness": 0})
    assert only_contrast.score(items([image]), CTX) == pytest.approx([1.0], abs=1e-6)
    only_colour = build("image_stats", {"sharpness": 0, "contrast": 0})
    assert only_colour.score(items([image]), CTX) == pytest.approx([0.0], abs=1e-6)


def test_image_stats_mixed_sizes_keep_order():
    small, large = _checkerboard(32), Image.new("RGB", (80, 48), (90, 90, 90))
    scorer = build("image_stats")
    together = scorer.score(items([large, small, large]), CTX)
    alone = scorer.score(items([small]), CTX)
    assert together[1] == pytest.approx(alone[0])
    assert together[0] == together[2] < together[1]


# --- cheap checks: noise, degenerate images ------------------------------------------------


def _scene(size=96):
    """A smooth picture with colour gradients and soft waves, and no noise."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    array = np.stack([0.5 + 0.4 * np.sin(6 * xx + 2 * yy), 0.2 + 0.6 * yy, 0.5 + 0.3 * np.cos(5 * yy - 3 * xx)], -1)
    return Image.fromarray(np.rint(255 * array).astype(np.uint8))


def _with_noise(image, sigma, seed=0):
    """``image`` with Gaussian noise of standard deviation ``sigma`` (8-bit units) added."""
    noise = np.random.default_rng(seed).normal(0.0, sigma, np.asarray(image).shape)
    return Image.fromarray(np.clip(np.rint(np.asarray(image, dtype=np.float64) + noise), 0, 255).astype(np.uint8))


def _batch(*images):
    return torch.from_numpy(np.stack([np.asarray(im, dtype=np.float32) for im in images])).permute(0, 3, 1, 2) / 255


def test_noise_estimate_follows_the_noise_added_and_the_score_falls():
    clean = _scene()
    sigmas = noise_sigma(_batch(*(_with_noise(clean, s) for s in (0, 3, 8, 16)))).tolist()
    assert sigmas[0] < 1.0 and all(a < b for a, b in itertools.pairwise(sigmas)), sigmas
    # independent noise per RGB channel reaches the luminance scaled by the norm of the luma weights
    luma_share = math.sqrt(0.299 ** 2 + 0.587 ** 2 + 0.114 ** 2)
    assert sigmas[2] == pytest.approx(8 * luma_share, rel=0.15) and sigmas[3] == pytest.approx(16 * luma_share, rel=0.15)
    scorer = build("low_noise")
    noisy = _with_noise(clean, 8)
    scores = scorer.score(items([clean, noisy]), CTX)
    assert scores[0] > 0.8 > scores[1] > 0.2
    assert scores == pytest.approx([scorer.score(items([im]), CTX)[0] for im in (clean, noisy)])  # batched = alone
    with pytest.raises(ScorerError, match=r"half.*must be > 0"):
        build("low_noise", {"half": 0})


def test_flat_one_colour_and_burnt_images_are_degenerate_and_a_scene_is_not():
    scene = _scene()
    grey = Image.new("RGB", (96, 96), (128, 128, 128))
    patch = np.full((96, 96, 3), (40, 90, 200), np.uint8)
    patch[:20, :20] = np.asarray(scene)[:20, :20]  # a little picture in a large single-colour field
    burnt = np.zeros((96, 96, 3), np.uint8)
    burnt[::2] = 255  # black and white lines: contrast, but every pixel clipped
    images = [scene, grey, Image.fromarray(patch), Image.fromarray(burnt)]
    found = degeneracy(_batch(*images))
    assert found["largest_colour"][2] > 0.9 and found["clipped"][3] == 1.0 and found["std"][1] == 0
    assert is_degenerate(_batch(*images)).tolist() == [False, True, True, True]
    scores = build("non_degenerate").score(items(images), CTX)
    assert scores[0] > 0.9 and max(scores[1:]) < 0.5 and scores[1] == 0.0
    assert scores[0] == pytest.approx(build("non_degenerate").score(items([scene]), CTX)[0])


# --- reference -----------------------------------------------------------------------------


def _noisy(image, amount, seed=0):
    rng = np.random.default_rng(seed)
    noise = rng.uniform(-1.0, 1.0, np.asarray(image).shape)
    array = np.asarray(image, dtype=np.float64) + 255.0 * amount * noise
    return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8))


def test_reference_identical_is_one_and_noise_lowers_it(tmp_path):
    reference = random_image(1, (40, 32)).filter(ImageFilter.GaussianBlur(2))
    reference.save(tmp_path / "0.png")
    scorer = build("reference", {"folder": str(tmp_path)})
    assert scorer.check_ready() == []
    levels = [0.0, 0.02, 0.05, 0.1, 0.2, 0.4, 0.8]
    scores = [scorer.score(items([_noisy(reference, a)]), CTX)[0] for a in levels]
    assert scores[0] == 1.0
    assert all(a > b for a, b in itertools.pairwise(scores)), scores
    assert scores[-1] > 0.0


def test_reference_prefers_the_prompt_set_folder_and_resizes(tmp_path):
    red, blue = Image.new("RGB", (16, 16), (255, 0, 0)), Image.new("RGB", (16, 16), (0, 0, 255))
    (tmp_path / "portraits").mkdir()
    red.save(tmp_path / "portraits" / "1.png")
    blue.save(tmp_path / "1.png")
    scorer = build("reference", {"folder": tmp_path})
    candidate = Image.new("RGB", (48, 40), (255, 0, 0))
    in_set, fallback = scorer.score(
        items([candidate], "portraits", 1) + items([candidate], "other", 1), CTX
    )
    assert in_set == pytest.approx(1.0)
    assert fallback == pytest.approx(1.0 - 2 / 3)  # red vs blue: two of three channels differ fully


def test_reference_of_the_images_seed_comes_first(tmp_path):
    """References by seed (``seed-<seed>.png``) serve images of other seeds than a trial's own
    (the confirmation stage's); an image of a seed without one takes the index's."""
    (tmp_path / "p").mkdir()
    Image.new("RGB", (16, 16), (0, 255, 0)).save(tmp_path / "p" / "seed-0.png")
    Image.new("RGB", (16, 16), (255, 0, 0)).save(tmp_path / "p" / "1.png")
    Image.new("RGB", (16, 16), (255, 0, 0)).save(tmp_path / "p" / "2.png")
    scorer = build("reference", {"folder": tmp_path})
    green = Image.new("RGB", (16, 16), (0, 255, 0))
    by_seed, by_index = scorer.score(items([green, green], "p", 1), CTX)  # seeds 0 and 1, images 1 and 2
    assert by_seed == pytest.approx(1.0) and by_index == pytest.approx(1.0 - 2 / 3)


def test_reference_missing_file_names_the_paths_tried(tmp_path):
    scorer = build("reference", {"folder": tmp_path})
    with pytest.raises(ScorerError) as error:
        scorer.score(items([random_image(0)], "night", 3), CTX)
    message = str(error.value)
    assert str(tmp_path / "night" / "3.png") in message and str(tmp_path / "3.png") in message


def test_reference_check_ready_reports_missing_folder(tmp_path):
    problems = build("reference", {"folder": tmp_path / "nope"}).check_ready()
    assert len(problems) == 1 and str(tmp_path / "nope") in problems[0]


# --- laion_aesthetic on tiny real-format weights ---------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One tiny CLIP saved three ways, a second CLIP, and a head with the real key layout."""
    root = tmp_path_factory.mktemp("tiny_scorers")
    arch = register_tiny_clip_config(root / "open_clip_configs")
    clip = make_tiny_clip(seed=0)
    head = make_tiny_head(TINY_EMBED_DIM, seed=1)
    return {
        "arch": arch,
        "clip": clip,
        "head": head,
        "head_path": save_head(head, root / "head.pth"),
        "bin": save_state_dict(clip, root / "open_clip_pytorch_model.bin"),
        "safetensors": save_safetensors(clip, root / "open_clip_model.safetensors"),
        "openai": save_openai_archive(clip, root / "ViT-L-14.pt"),
        "other_bin": save_state_dict(make_tiny_clip(seed=5), root / "other.bin"),
        "images": [random_image(seed) for seed in range(3)] + [_checkerboard(48)],
        "root": root,
    }


def expected_scores(tiny, images):
    """The predictor by hand: CLIP preprocessing, encode, L2-normalise, head."""
    import open_clip

    preprocess = open_clip.image_transform(
        32, is_train=False, mean=open_clip.OPENAI_DATASET_MEAN, std=open_clip.OPENAI_DATASET_STD
    )
    with torch.no_grad():
        features = tiny["clip"].encode_image(torch.stack([preprocess(im) for im in images]))
        return tiny["head"](F.normalize(features, dim=-1)).squeeze(-1).tolist()


def test_laion_check_ready_reports_default_paths(tmp_path, monkeypatch):
    monkeypatch.setattr(LaionAestheticScorer, "fallbacks", {"clip": ("clip/ViT-L-14.pt",)})
    scorer = build("laion_aesthetic", models_dir=tmp_path)
    problems = scorer.check_ready()
    assert str(tmp_path / "laion_aesthetic" / HEAD_FILENAME) in problems[0]
    assert "source: https://github.com/christophschuhmann/improved-aesthetic-predictor" in problems[0]
    assert f"{tmp_path / 'clip' / 'ViT-L-14-openai.safetensors'} or {tmp_path / 'clip' / 'ViT-L-14.pt'}" in problems[1]
    assert "huggingface.co/timm/vit_large_patch14_clip_224.openai" in problems[1]
    assert all(p.endswith("python -m sd_optim scorers download laion_aesthetic") for p in problems)
    with pytest.raises(ScorerError, match="improved-aesthetic-predictor"):
        scorer.load()
    # a file named in the options is the only place looked at, and not offered for download
    named = build("laion_aesthetic", {"head": str(tmp_path / "mine.pth")}, models_dir=tmp_path).check_ready()
    assert str(tmp_path / "mine.pth") in named[0] and "download" not in named[0]


def test_laion_scores_from_default_locations_with_openai_archive(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(LaionAestheticScorer, "fallbacks", {"clip": ("clip/ViT-L-14.pt",)})
    (tmp_path / "clip").mkdir()
    (tmp_path / "laion_aesthetic").mkdir()
    (tmp_path / "clip" / "ViT-L-14.pt").write_bytes(tiny["openai"].read_bytes())
    (tmp_path / "laion_aesthetic" / HEAD_FILENAME).write_bytes(tiny["head_path"].read_bytes())
    scorer = build("laion_aesthetic", models_dir=tmp_path)
    assert scorer.check_ready() == []
    scores = scorer.score(items(tiny["images"]), CTX)
    assert scores == pytest.approx(expected_scores(tiny, tiny["images"]), abs=1e-4)
    assert len(set(scores)) == len(scores)


@pytest.mark.parametrize("weights", ["bin", "safetensors"])
def test_laion_scores_from_open_clip_state_dict(tiny, weights):
    options = {
        "clip": str(tiny[weights]),
        "head": str(tiny["head_path"]),
        "clip_arch": tiny["arch"],
    }
    scores = build("laion_aesthetic", options).score(items(tiny["images"]), CTX)
    assert all(math.isfinite(s) for s in scores)
    assert scores == pytest.approx(expected_scores(tiny, tiny["images"]), abs=1e-5)
    again = build("laion_aesthetic", options).score(items(tiny["images"]), CTX)
    assert again == scores  # a fresh load scores bit-identically


def test_laion_quick_gelu_matters_for_state_dicts(tiny):
    options = {"clip": str(tiny["bin"]), "head": str(tiny["head_path"]), "clip_arch": tiny["arch"]}
    quick = build("laion_aesthetic", options)
    plain = build("laion_aesthetic", {**options, "clip_quick_gelu": False})
    quick.load()
    plain.load()
    features = [
        F.normalize(s._backbone.encode_images(tiny["images"]), dim=-1) for s in (quick, plain)
    ]
    with torch.no_grad():
        reference = F.normalize(
            tiny["clip"].encode_image(
                torch.stack([quick._backbone.preprocess(im) for im in tiny["images"]])
            ),
            dim=-1,
        )
    assert torch.allclose(features[0], reference, atol=1e-5)
    assert (features[1] - reference).abs().max() > 1e-3


def test_laion_scorers_share_one_backbone_load_and_forward(tiny):
    cache = BackboneCache()
    options = {"clip": str(tiny["bin"]), "head": str(tiny["head_path"]), "clip_arch": tiny["arch"]}
    first = build("laion_aesthetic", options, backbones=cache)
    second = build("laion_aesthetic", options, backbones=cache)
    other = build("laion_aesthetic", {**options, "clip": str(tiny["other_bin"])}, backbones=cache)
    batch = items(tiny["images"])

    first.load()
    second.load()
    assert list(cache.loads.values()) == [1]
    backbone = first._backbone
    assert second._backbone is backbone

    calls = []
    encode = backbone.model.encode_image
    backbone.model.encode_image = lambda pixels: calls.append(len(pixels)) or encode(pixels)
    try:
        assert first.score(batch, CTX) == second.score(batch, CTX)
        assert calls == [len(batch)]  # the second scorer reused the first one's forward
        first.score(items(tiny["images"][:2]), CTX)
        assert calls == [len(batch), 2]
    finally:
        del backbone.model.encode_image

    other.score(batch, CTX)  # different weights: a second backbone
    assert sorted(cache.loads.values()) == [1, 1]
    assert other._backbone is not backbone


def test_laion_head_not_matching_clip_is_rejected(tiny, tmp_path):
    wide_head = save_head(make_tiny_head(TINY_EMBED_DIM * 2, seed=2), tmp_path / "wide.pth")
    scorer = build(
        "laion_aesthetic",
        {"clip": str(tiny["bin"]), "head": str(wide_head), "clip_arch": tiny["arch"]},
    )
    with pytest.raises(ScorerError, match="expects 32-dim embeddings"):
        scorer.load()


def test_laion_head_with_foreign_keys_is_rejected(tiny, tmp_path):
    bogus = tmp_path / "bogus.pth"
    torch.save({"mlp.weight": torch.zeros(1, TINY_EMBED_DIM)}, bogus)
    scorer = build(
        "laion_aesthetic", {"clip": str(tiny["bin"]), "head": str(bogus), "clip_arch": tiny["arch"]}
    )
    with pytest.raises(ScorerError, match="unexpected entry 'mlp.weight'"):
        scorer.load()


def test_laion_unknown_clip_arch_is_named(tiny):
    options = {"clip": str(tiny["bin"]), "head": str(tiny["head_path"]), "clip_arch": "ViT-Q-99"}
    with pytest.raises(ScorerError, match="'ViT-Q-99'"):
        build("laion_aesthetic", options).load()


def test_laion_explicit_missing_clip_path_is_reported(tiny, tmp_path):
    missing = tmp_path / "nowhere" / "clip.bin"
    scorer = build("laion_aesthetic", {"clip": str(missing), "head": str(tiny["head_path"])})
    problems = scorer.check_ready()
    assert len(problems) == 1 and str(missing) in problems[0]


# --- clip_score on the tiny CLIP ---------------------------------------------------------------


def test_clip_score_is_the_image_prompt_cosine_and_shares_the_backbone(tiny):
    import open_clip

    cache = BackboneCache()
    clip = {"clip": str(tiny["bin"]), "clip_arch": tiny["arch"]}
    scorer = build("clip_score", clip, backbones=cache)
    batch = [ImageToScore(image=im, prompt=p, negative_prompt="", seed=0, payload="p", index=i)
             for i, (im, p) in enumerate(zip(tiny["images"], ["a cat", "a dog", "a cat", "a red fox"]))]
    scores = scorer.score(batch, CTX)
    with torch.no_grad():
        pictures = F.normalize(tiny["clip"].encode_image(
            torch.stack([scorer._backbone.preprocess(im) for im in tiny["images"]])), dim=-1)
        texts = F.normalize(tiny["clip"].encode_text(
            open_clip.get_tokenizer(tiny["arch"])([b.prompt for b in batch])), dim=-1)
    expected = (100 * (pictures * texts).sum(-1)).clamp(min=0).tolist()
    assert scores == pytest.approx(expected, abs=1e-3) and all(0 <= s <= 100 for s in scores)
    alone = [scorer.score([b], CTX)[0] for b in batch]
    assert alone == pytest.approx(scores, abs=1e-4)  # batched = one by one
    assert scorer.normalize(20.0) == 0.5 and scorer.normalize(80.0) == 1.0
    # LAION aesthetic on the same CLIP file: one load, one image forward for both
    laion = build("laion_aesthetic", {**clip, "head": str(tiny["head_path"])}, backbones=cache)
    laion.load()
    assert list(cache.loads.values()) == [1] and laion._backbone is scorer._backbone


def test_reference_ssim_is_one_for_the_same_picture_and_falls_with_noise_and_blur(tmp_path):
    reference = _scene(64)
    reference.save(tmp_path / "0.png")
    scorer = build("reference", {"folder": str(tmp_path), "measure": "ssim"})
    noisy = [_with_noise(reference, s) for s in (0, 4, 12, 30)]
    scores = [scorer.score(items([im]), CTX)[0] for im in noisy]
    assert scores[0] == pytest.approx(1.0, abs=1e-6)
    assert all(a > b for a, b in itertools.pairwise(scores)), scores
    blurred = scorer.score(items([_checkerboard(64).filter(ImageFilter.GaussianBlur(2))]), CTX)[0]
    assert blurred < scores[1]
    with pytest.raises(ScorerError, match="'measure' = 'psnr' must be one of pyramid, ssim"):
        build("reference", {"folder": str(tmp_path), "measure": "psnr"})


def test_reference_clip_finds_the_picture_most_similar_to_itself(tiny, tmp_path):
    for i, image in enumerate(tiny["images"][:3]):
        image.save(tmp_path / f"{i}.png")
    cache = BackboneCache()
    clip = {"clip": str(tiny["bin"]), "clip_arch": tiny["arch"]}
    scorer = build("reference_clip", {**clip, "folder": str(tmp_path)}, backbones=cache)
    assert scorer.check_ready() == []
    same = scorer.score(items(tiny["images"][:3]), CTX)
    assert same == pytest.approx([1.0, 1.0, 1.0], abs=1e-4)
    swapped = scorer.score(items([tiny["images"][1], tiny["images"][0]]), CTX)
    assert max(swapped) < 0.9999
    # the trial's batch stays the one other scorers on the backbone reuse
    batch = tiny["images"][:3]
    scorer.clip_backbone().encode_images(batch)
    scorer.score(items(batch), CTX)
    assert scorer.clip_backbone()._last_images == tuple(batch)
    missing = build("reference_clip", {**clip, "folder": str(tmp_path / "none")}).check_ready()
    assert "reference_clip: the folder" in missing[0]


def test_consistency_is_one_for_identical_images_and_lower_for_different_ones(tiny):
    scorer = build("consistency", {"clip": str(tiny["bin"]), "clip_arch": tiny["arch"]})
    image = tiny["images"][0]
    assert scorer.score(items([image, image.copy(), image.copy()]), CTX) == pytest.approx([1.0] * 3, abs=1e-4)
    mixed = scorer.score(items(tiny["images"]), CTX)
    assert all(s < 0.9999 for s in mixed) and len(mixed) == len(tiny["images"])
    assert scorer.score(items([image]), CTX) == [1.0]  # nothing to compare with


# --- laion_chad and wd_aesthetic on tiny weights in the real files' formats ---------------------


def test_laion_chad_is_the_laion_head_from_its_own_file(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(LaionAestheticScorer, "fallbacks", {"clip": ()})
    (tmp_path / "laion_chad").mkdir()
    (tmp_path / "laion_chad" / "chadscorer.pth").write_bytes(tiny["head_path"].read_bytes())
    scorer = build("laion_chad", {"clip": str(tiny["bin"]), "clip_arch": tiny["arch"]}, models_dir=tmp_path)
    assert scorer.check_ready() == []
    assert scorer.score(items(tiny["images"]), CTX) == pytest.approx(expected_scores(tiny, tiny["images"]), abs=1e-5)
    missing = build("laion_chad", models_dir=tmp_path / "empty").check_ready()
    assert "chadscorer.pth" in missing[0] and "github.com/grexzen/SD-Chad" in missing[0]


def _wd_head(tmp_path, seed=3):
    torch.manual_seed(seed)
    layers = {"fc1": torch.nn.Linear(TINY_EMBED_DIM, 12), "fc2": torch.nn.Linear(12, 6), "fc3": torch.nn.Linear(6, 1)}
    path = tmp_path / "aes-B32-v0.pth"
    torch.save({f"{n}.{k}": v for n, layer in layers.items() for k, v in layer.state_dict().items()}, path)
    return path, layers


def test_wd_aesthetic_is_the_classifier_on_normalised_clip_embeddings(tiny, tmp_path):
    path, layers = _wd_head(tmp_path)
    scorer = build("wd_aesthetic", {"head": str(path), "clip": str(tiny["bin"]), "clip_arch": tiny["arch"]})
    scores = scorer.score(items(tiny["images"]), CTX)
    with torch.no_grad():
        x = F.normalize(tiny["clip"].encode_image(
            torch.stack([scorer._backbone.preprocess(im) for im in tiny["images"]])), dim=-1)
        expected = torch.sigmoid(layers["fc3"](F.relu(layers["fc2"](F.relu(layers["fc1"](x)))))).squeeze(-1)
    assert scores == pytest.approx(expected.tolist(), abs=1e-5) and all(0 < s < 1 for s in scores)
    assert [scorer.score(items([im]), CTX)[0] for im in tiny["images"]] == pytest.approx(scores, abs=1e-5)
    torch.save({"layers.0.weight": torch.zeros(1, TINY_EMBED_DIM)}, tmp_path / "other.pth")
    wrong = build("wd_aesthetic", {"head": str(tmp_path / "other.pth"), "clip": str(tiny["bin"]),
                                   "clip_arch": tiny["arch"]})
    with pytest.raises(ScorerError, match="is not the WD classifier"):
        wrong.load()
    missing = build("wd_aesthetic", models_dir=tmp_path / "empty").check_ready()
    assert "huggingface.co/hakurei/waifu-diffusion-v1-4 (models/aes-B32-v0.pth)" in missing[0]
    assert "ViT-B-32-openai.safetensors" in missing[1]


# --- HPS v2 / v2.1 on a tiny open_clip checkpoint in its {'state_dict': ...} wrapper -------------


def test_hps_pads_to_a_square_and_scores_the_image_prompt_cosine(tiny, tmp_path):
    import open_clip

    from sd_optim.scoring.hps import OPENAI_MEAN, OPENAI_STD, pad_to_square

    wide = Image.new("RGB", (64, 32), (255, 255, 255))
    pixels = pad_to_square(32)(wide)
    black = [-m / s for m, s in zip(OPENAI_MEAN, OPENAI_STD)]
    white = [(1 - m) / s for m, s in zip(OPENAI_MEAN, OPENAI_STD)]
    assert pixels.shape == (3, 32, 32)
    assert pixels[:, :8].flatten(1).mean(1).tolist() == pytest.approx(black, abs=1e-5)  # padded above
    assert pixels[:, 12:20].flatten(1).mean(1).tolist() == pytest.approx(white, abs=1e-3)  # the picture

    torch.manual_seed(7)
    model = open_clip.create_model(tiny["arch"]).eval()  # plain GELU, as LAION's ViT-H-14
    (tmp_path / "hps").mkdir()
    torch.save({"state_dict": model.state_dict()}, tmp_path / "hps" / "HPS_v2.1_compressed.pt")
    scorer = build("hpsv2_1", {"clip_arch": tiny["arch"]}, models_dir=tmp_path)
    assert scorer.check_ready() == []
    prompts = ["a cat", "a dog", "a cat", "a red fox"]
    batch = [ImageToScore(image=im, prompt=p, negative_prompt="", seed=0, payload="p", index=i)
             for i, (im, p) in enumerate(zip(tiny["images"], prompts))]
    scores = scorer.score(batch, CTX)
    with torch.no_grad():
        x = F.normalize(model.encode_image(torch.stack([pad_to_square(32)(im) for im in tiny["images"]])), dim=-1)
        t = F.normalize(model.encode_text(open_clip.get_tokenizer(tiny["arch"])(prompts)), dim=-1)
    assert scores == pytest.approx((x * t).sum(-1).tolist(), abs=1e-4)
    assert [scorer.score([b], CTX)[0] for b in batch] == pytest.approx(scores, abs=1e-4)
    missing = build("hpsv2", models_dir=tmp_path).check_ready()
    assert "HPS_v2_compressed.pt" in missing[0] and "huggingface.co/xswu/HPSv2" in missing[0]


# --- city_aesthetics on a tiny CLIP repo folder and a tiny predictor ------------------------------


def test_city_aesthetics_scores_the_predictor_on_the_clip_image_embeds(tmp_path):
    from safetensors.torch import save_file
    from transformers import CLIPImageProcessor

    from sd_optim.scoring.city_aesthetics import CityPredictor

    clip = save_tiny_hf_clip(tmp_path / "clip-vit-large-patch14-336")
    torch.manual_seed(4)
    predictor = CityPredictor({"up.0": (TINY_EMBED_DIM, 24), "down.0": (24, 12), "down.1": (12, 8),
                               "down.4": (8, 4), "down.5": (4, 1)}).eval()
    (tmp_path / "city_aesthetics").mkdir()
    save_file(predictor.state_dict(), str(tmp_path / "city_aesthetics" / "CityAesthetics-Anime-v1.8.safetensors"))
    scorer = build("city_aesthetics", models_dir=tmp_path)
    assert scorer.check_ready() == []
    images = [random_image(seed) for seed in range(3)] + [_checkerboard(48)]
    scores = scorer.score(items(images), CTX)
    pixels = CLIPImageProcessor.from_pretrained(str(tmp_path / "clip-vit-large-patch14-336"))(
        images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        embeds = clip.visual_projection(clip.vision_model(pixel_values=pixels).pooler_output)
        expected = predictor(embeds).squeeze(-1).tolist()
    assert scores == pytest.approx(expected, abs=1e-5) and all(0 < s < 1 for s in scores)
    assert [scorer.score(items([im]), CTX)[0] for im in images] == pytest.approx(scores, abs=1e-5)
    # a folder named in the options, with model.safetensors instead of pytorch_model.bin
    save_tiny_hf_clip(tmp_path / "mine", safetensors=True)
    mine = build("city_aesthetics", {"vision_model": str(tmp_path / "mine")}, models_dir=tmp_path)
    assert mine.check_ready() == [] and len(mine.score(items(images[:1]), CTX)) == 1
    missing = build("city_aesthetics", models_dir=tmp_path / "empty").check_ready()
    assert len(missing) == 4 and "huggingface.co/openai/clip-vit-large-patch14-336 (pytorch_model.bin)" in missing[3]
    assert str(tmp_path / "empty" / "clip-vit-large-patch14-336" / "model.safetensors") in missing[3]


# --- aesthetic_v2_5 on a tiny SigLIP repo folder and a tiny bf16 head -----------------------------


def test_aesthetic_v2_5_scores_the_head_on_normalised_siglip_pooling_or_says_why_not(tmp_path):
    import transformers

    if not hasattr(transformers, "SiglipModel"):  # the A1111 environment's transformers 4.30
        problems = build("aesthetic_v2_5", models_dir=tmp_path).check_ready()
        assert problems[0].startswith("aesthetic_v2_5: unavailable here: needs SiglipVisionModel "
                                      "(transformers 4.37 or newer)")
        return
    from safetensors.torch import save_file
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    torch.manual_seed(5)
    folder = tmp_path / "siglip-so400m-patch14-384"
    config = SiglipConfig(text_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1,
                                       "num_attention_heads": 4, "vocab_size": 100},
                          vision_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                                         "num_attention_heads": 4, "image_size": 32, "patch_size": 8})
    siglip = SiglipModel(config).eval()
    config.save_pretrained(str(folder))
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(str(folder))
    save_file({k: v.contiguous() for k, v in siglip.state_dict().items()}, str(folder / "model.safetensors"))
    head = torch.nn.Sequential(torch.nn.Linear(32, 16), torch.nn.Dropout(), torch.nn.Linear(16, 8), torch.nn.Dropout(),
                               torch.nn.Linear(8, 4), torch.nn.Dropout(), torch.nn.Linear(4, 2), torch.nn.Dropout(),
                               torch.nn.Linear(2, 1)).eval()
    (tmp_path / "aesthetic_v2_5").mkdir()
    torch.save({f"scoring_head.{k}": v.to(torch.bfloat16) for k, v in head.state_dict().items()},
               tmp_path / "aesthetic_v2_5" / "aesthetic_predictor_v2_5.pth")
    scorer = build("aesthetic_v2_5", models_dir=tmp_path)
    assert scorer.check_ready() == []
    images = [random_image(seed) for seed in range(3)]
    scores = scorer.score(items(images), CTX)
    pixels = SiglipImageProcessor.from_pretrained(str(folder))(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        pooled = F.normalize(siglip.vision_model(pixel_values=pixels).pooler_output, dim=-1)
        bf16 = torch.nn.Sequential(*head).to(torch.bfloat16).float()  # the weights as the file holds them
        expected = bf16(pooled).squeeze(-1).tolist()
    assert scores == pytest.approx(expected, abs=1e-5)
    assert [scorer.score(items([im]), CTX)[0] for im in images] == pytest.approx(scores, abs=1e-5)


# --- pickscore on a tiny CLIPModel folder and a processor folder ---------------------------------


def test_pickscore_is_the_scaled_image_prompt_cosine_of_the_fine_tuned_clip(tmp_path):
    import open_clip
    from transformers import CLIPTokenizer

    model = save_tiny_hf_clip(tmp_path / "PickScore_v1", safetensors=True)
    (tmp_path / "PickScore_v1" / "preprocessor_config.json").rename(tmp_path / "preprocessor_config.json")
    processor = write_clip_tokenizer(tmp_path / "CLIP-ViT-H-14-laion2B-s32B-b79K")
    (tmp_path / "preprocessor_config.json").rename(processor / "preprocessor_config.json")
    tokenizer = CLIPTokenizer.from_pretrained(str(processor))
    assert tokenizer("a red fox").input_ids == [i for i in open_clip.tokenize(["a red fox"])[0].tolist() if i]
    scorer = build("pickscore", models_dir=tmp_path)
    assert scorer.check_ready() == []
    prompts = ["a cat", "a dog", "a cat"]
    images = [random_image(seed) for seed in range(3)]
    batch = [ImageToScore(image=im, prompt=p, negative_prompt="", seed=0, payload="p", index=i)
             for i, (im, p) in enumerate(zip(images, prompts))]
    scores = scorer.score(batch, CTX)
    from transformers import CLIPImageProcessor

    pixels = CLIPImageProcessor.from_pretrained(str(processor))(images=images, return_tensors="pt")["pixel_values"]
    text = tokenizer(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        img = F.normalize(model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output), dim=-1)
        txt = F.normalize(model.text_projection(model.text_model(**text).pooler_output), dim=-1)
        expected = (model.logit_scale.exp() * (img * txt).sum(-1)).tolist()
    assert scores == pytest.approx(expected, abs=1e-4)
    assert [scorer.score([b], CTX)[0] for b in batch] == pytest.approx(scores, abs=1e-4)
    missing = build("pickscore", models_dir=tmp_path / "empty").check_ready()
    assert len(missing) == 6 and "huggingface.co/yuvalkirstain/PickScore_v1 (model.safetensors)" in missing[1]


# --- blip_itm on a tiny BLIP retrieval model folder ----------------------------------------------


def test_blip_itm_is_the_match_probability_of_the_itm_head(tmp_path):
    from safetensors.torch import save_file
    from transformers import BertTokenizer, BlipConfig, BlipForImageTextRetrieval, BlipImageProcessor

    folder = tmp_path / "blip-itm-large-coco"
    folder.mkdir()
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "cat", "dog", "red", "fox", "on", "the", "hill"]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(str(folder))
    torch.manual_seed(6)
    config = BlipConfig(text_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                                     "num_attention_heads": 4, "vocab_size": len(words), "encoder_hidden_size": 32},
                        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                                       "num_attention_heads": 4, "image_size": 32, "patch_size": 8},
                        projection_dim=16)
    model = BlipForImageTextRetrieval(config).eval()
    config.save_pretrained(str(folder))
    BlipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(str(folder))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    scorer = build("blip_itm", models_dir=tmp_path)
    assert scorer.check_ready() == []
    prompts = ["a cat", "a red fox on the hill", "a dog"]
    images = [random_image(seed) for seed in range(3)]
    batch = [ImageToScore(image=im, prompt=p, negative_prompt="", seed=0, payload="p", index=i)
             for i, (im, p) in enumerate(zip(images, prompts))]
    scores = scorer.score(batch, CTX)
    tokenizer = BertTokenizer.from_pretrained(str(folder))
    pixels = BlipImageProcessor.from_pretrained(str(folder))(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = []
        for i, prompt in enumerate(prompts):
            ids = tokenizer([prompt], return_tensors="pt")
            out = model(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"],
                        pixel_values=pixels[i:i + 1], use_itm_head=True)
            expected.append(torch.softmax(out.itm_score, dim=-1)[0, 1].item())
    assert scores == pytest.approx(expected, abs=1e-4) and all(0 < s < 1 for s in scores)


# --- image_reward on a tiny checkpoint in ImageReward.pt's own key layout ------------------------

def test_image_reward_maps_the_original_checkpoint_onto_blip_and_z_scores_the_reward(tmp_path):
    import json

    import torchvision.transforms as T
    from transformers import BertTokenizer, BlipTextConfig, BlipVisionConfig, BlipVisionModel
    from transformers.models.blip.modeling_blip_text import BlipTextModel

    from sd_optim.scoring.image_reward import REWARD_MEAN, REWARD_STD
    from sd_optim.scoring.tiny import original_vision_key

    torch.manual_seed(8)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "cat", "dog", "red", "fox", "on", "the", "hill"]
    med = {"vocab_size": len(words) + 2, "hidden_size": 32, "encoder_width": 64, "intermediate_size": 37,
           "num_attention_heads": 4, "num_hidden_layers": 2, "max_position_embeddings": 40,
           "layer_norm_eps": 1e-12, "hidden_act": "gelu"}
    vision = BlipVisionModel(BlipVisionConfig(hidden_size=64, intermediate_size=37, num_hidden_layers=2,
                                              num_attention_heads=1, image_size=32, patch_size=8,
                                              layer_norm_eps=1e-6)).eval()
    text = BlipTextModel(BlipTextConfig(vocab_size=med["vocab_size"], hidden_size=32, encoder_hidden_size=64,
                                        intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                                        max_position_embeddings=40), add_pooling_layer=False).eval()
    mlp = make_tiny_head(32, seed=9, hidden=(16, 8, 4, 2))
    state = {f"blip.visual_encoder.{original_vision_key(k)}": v for k, v in vision.state_dict().items()}
    state.update({f"blip.text_encoder.{k}": v for k, v in text.state_dict().items()})
    state.update({f"mlp.layers.{k}": v for k, v in mlp.state_dict().items()})
    state["blip.vision_proj.weight"] = torch.zeros(4, 64)  # parts the reward does not use
    (tmp_path / "ImageReward").mkdir()
    torch.save(state, tmp_path / "ImageReward" / "ImageReward.pt")
    (tmp_path / "ImageReward" / "med_config.json").write_text(json.dumps(med), encoding="utf-8")
    (tmp_path / "bert-base-uncased").mkdir()
    (tmp_path / "bert-base-uncased" / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")

    scorer = build("image_reward", models_dir=tmp_path)
    assert scorer.check_ready() == []
    prompts = ["a cat", "a red fox on the hill", "a dog"]
    images = [random_image(seed) for seed in range(3)]
    batch = [ImageToScore(image=im, prompt=p, negative_prompt="", seed=0, payload="p", index=i)
             for i, (im, p) in enumerate(zip(images, prompts))]
    scores = scorer.score(batch, CTX)

    tokenizer = BertTokenizer(str(tmp_path / "bert-base-uncased" / "vocab.txt"))
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    preprocess = T.Compose([T.Resize(32, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(32), T.ToTensor(),
                            T.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))])
    with torch.no_grad():
        tokens = tokenizer(prompts, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
        image_tokens = vision(pixel_values=torch.stack([preprocess(im) for im in images])).last_hidden_state
        out = text(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                   encoder_hidden_states=image_tokens, encoder_attention_mask=torch.ones(image_tokens.shape[:-1]))
        expected = ((mlp(out.last_hidden_state[:, 0]).squeeze(-1) - REWARD_MEAN) / REWARD_STD).tolist()
    assert scores == pytest.approx(expected, abs=1e-4)
    assert [scorer.score([b], CTX)[0] for b in batch] == pytest.approx(scores, abs=1e-4)
    torch.save({"mlp.layers.0.weight": torch.zeros(1, 32)}, tmp_path / "other.pt")
    with pytest.raises(ScorerError, match="is not an ImageReward checkpoint"):
        build("image_reward", {"checkpoint": str(tmp_path / "other.pt")}, models_dir=tmp_path).load()


@pytest.mark.parametrize("which", ["head", "clip"])
def test_a_truncated_weight_file_is_named_with_what_to_do(tiny, tmp_path, which):
    files = {"head": tiny["head_path"], "clip": tiny["safetensors"]}
    cut = tmp_path / files[which].name
    cut.write_bytes(files[which].read_bytes()[: files[which].stat().st_size // 2])
    options = {"head": str(tiny["head_path"]), "clip": str(tiny["safetensors"]), "clip_arch": tiny["arch"], which: str(cut)}
    with pytest.raises(ScorerError, match=rf"could not read {re.escape(str(cut))} .*incomplete or damaged: delete it "
                                          r"and download it again"):
        build("laion_aesthetic", options).load()


def test_the_backbone_cache_finds_its_models_counts_their_memory_and_offloads_them(tiny):
    cache = BackboneCache()
    clip = build("clip_score", {"clip": str(tiny["bin"]), "clip_arch": tiny["arch"]}, backbones=cache)
    backbone = clip.clip_backbone()
    head = cache.get("head", lambda: (torch.nn.Linear(4, 1), "a processor"))[0]
    assert cache.models() == [backbone.model, head]
    size = sum(t.numel() * t.element_size() for m in cache.models() for t in (*m.parameters(), *m.buffers()))
    assert cache.device_bytes(torch.device("cpu")) == size and cache.device_bytes(torch.device("cuda")) == 0
    backbone.encode_images(tiny["images"])
    backbone.encode_texts(["a cat"])
    cache.offload()  # what the backbone remembers goes first
    assert cache.offloaded and backbone._last_features is None and backbone._texts == {}
    cache.restore(torch.device("cpu"))
    assert not cache.offloaded
    assert len(clip.score(items(tiny["images"][:1]), CTX)) == 1
