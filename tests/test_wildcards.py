"""Wildcards: ``__name__`` in a prompt becomes a seeded line of ``name.txt``."""

import pytest
from test_runner import make_config

from sd_optim.errors import ConfigError
from sd_optim.run import events as ev
from sd_optim.run.runner import Runner, run_to_end
from sd_optim.run.wildcards import WildcardError, expand
from sd_optim.tiny_models import TINY_SIZE

ANIMALS = ["cat", "dog", "fox", "owl", "bat", "elk"]


@pytest.fixture
def cards(tmp_path):
    (tmp_path / "animal.txt").write_text("\n".join(ANIMALS) + "\n", encoding="utf-8")
    return tmp_path


def test_wildcard_becomes_one_line_of_its_file(cards):
    out = expand("a photo of a __animal__ at night", cards, seed=1)
    assert out.startswith("a photo of a ") and out.endswith(" at night")
    assert out[len("a photo of a "):-len(" at night")] in ANIMALS


def test_same_seed_same_prompt_other_seeds_draw_other_lines(cards):
    assert expand("__animal__", cards, 5) == expand("__animal__", cards, 5)
    drawn = {expand("__animal__", cards, seed) for seed in range(20)}
    assert drawn <= set(ANIMALS) and len(drawn) > 1


def test_text_without_wildcards_is_unchanged(cards):
    assert expand("a plain prompt, with_underscores_", cards, 0) == "a plain prompt, with_underscores_"


def test_comment_and_blank_lines_are_never_drawn(tmp_path):
    (tmp_path / "color.txt").write_text("# colours\n\n   \nred\n# blue\n  green  \n\n", encoding="utf-8")
    drawn = {expand("__color__", tmp_path, seed) for seed in range(40)}
    assert drawn == {"red", "green"}


def test_nested_wildcards_expand_fully(tmp_path):
    (tmp_path / "scene.txt").write_text("a __size__ __animal__\n", encoding="utf-8")
    (tmp_path / "size.txt").write_text("big\n", encoding="utf-8")
    (tmp_path / "animal.txt").write_text("fox\n", encoding="utf-8")
    assert expand("photo of __scene__", tmp_path, 0) == "photo of a big fox"


def test_wildcards_in_subfolders(tmp_path):
    (tmp_path / "pets").mkdir()
    (tmp_path / "pets" / "small.txt").write_text("hamster\n", encoding="utf-8")
    assert expand("__pets/small__", tmp_path, 0) == "hamster"


def test_missing_file_names_the_wildcard_and_the_path(cards):
    with pytest.raises(WildcardError) as info:
        expand("a __plant__", cards, 0)
    assert "__plant__" in str(info.value) and str(cards / "plant.txt") in str(info.value)


def test_missing_folder_names_the_wildcard_and_the_path(tmp_path):
    folder = tmp_path / "no-such-folder"
    with pytest.raises(WildcardError) as info:
        expand("a __animal__", folder, 0)
    assert "__animal__" in str(info.value) and str(folder) in str(info.value)


def test_no_wildcards_dir_names_the_wildcard_and_the_setting():
    with pytest.raises(WildcardError, match="__animal__.*wildcards_dir"):
        expand("a __animal__", None, 0)


def test_a_file_with_only_comments_is_an_error(tmp_path):
    (tmp_path / "empty.txt").write_text("# nothing yet\n\n", encoding="utf-8")
    with pytest.raises(WildcardError, match="__empty__.*no lines"):
        expand("__empty__", tmp_path, 0)


def test_a_cycle_between_wildcard_files_is_an_error_not_a_literal_prompt(tmp_path):
    (tmp_path / "a.txt").write_text("x __b__\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("y __a__\n", encoding="utf-8")
    with pytest.raises(WildcardError, match="cycle"):
        expand("__a__", tmp_path, 0)


def test_alternatives_draw_one_choice_reproducibly_and_nest(cards):
    drawn = {expand("a {red|green| blue } car", cards, seed) for seed in range(40)}
    assert drawn == {"a red car", "a green car", "a blue car"}
    assert expand("{a __animal__|an {old|young} __animal__}", cards, 3) == \
        expand("{a __animal__|an {old|young} __animal__}", cards, 3)
    nested = {expand("{a __animal__|an {old|young} __animal__}", cards, seed) for seed in range(60)}
    assert any(x.startswith("an old ") for x in nested) and any(x.startswith("an young ") for x in nested)
    assert all(x.split()[-1] in ANIMALS for x in nested)
    # braces without a "|" (emphasis in some prompt styles) stay as they are
    assert expand("{masterpiece}, a __animal__", cards, 0).startswith("{masterpiece}, a ")


def test_alternatives_in_a_wildcard_file_expand_too(tmp_path):
    (tmp_path / "light.txt").write_text("{soft|hard} light\n", encoding="utf-8")
    assert {expand("__light__", tmp_path, seed) for seed in range(30)} == {"soft light", "hard light"}


def test_prompts_without_braces_draw_as_before(cards):
    """Studies made before alternatives existed expand their prompts to the same text (resume)."""
    import random

    rng = random.Random(7)
    assert expand("__animal__ and __animal__", cards, 7) == f"{rng.choice(ANIMALS)} and {rng.choice(ANIMALS)}"


@pytest.mark.parametrize("name", ["../secret", "pets/../../secret", "/etc/passwd", "pets//small", "./animal"])
def test_a_wildcard_name_cannot_leave_the_wildcards_folder(tmp_path, name):
    folder = tmp_path / "cards"
    folder.mkdir()
    (tmp_path / "secret.txt").write_text("do not read\n", encoding="utf-8")
    with pytest.raises(WildcardError, match="without '.' or '..' parts"):
        expand(f"__{name}__", folder, 0)


def test_a_wildcard_file_linking_out_of_the_folder_is_refused(tmp_path):
    folder = tmp_path / "cards"
    folder.mkdir()
    (tmp_path / "secret.txt").write_text("do not read\n", encoding="utf-8")
    (folder / "leak.txt").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(WildcardError, match="leads out of the wildcards folder"):
        expand("__leak__", folder, 0)


def test_a_missing_wildcard_names_the_folder_searched_and_what_it_has(tmp_path):
    (tmp_path / "pets").mkdir()
    (tmp_path / "pets" / "small.txt").write_text("hamster\n", encoding="utf-8")
    (tmp_path / "pets" / "big.txt").write_text("horse\n", encoding="utf-8")
    with pytest.raises(WildcardError) as info:
        expand("__pets/tiny__", tmp_path, 0)
    message = str(info.value)
    assert str(tmp_path / "pets" / "tiny.txt") in message and f"searched {tmp_path / 'pets'}" in message
    assert "it has big, small" in message


# --- through the runner ----------------------------------------------------------------------


def test_every_trial_renders_the_same_expanded_prompt(sd1_host, tiny_sd1_paths, tiny_sd1_config_dir,
                                                      cards, tmp_path):
    (cards / "style.txt").write_text("blurry\nlow contrast\ngrainy\n", encoding="utf-8")
    config = make_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path / "runs", wildcards_dir=str(cards),
                         payloads=[{"name": "p", "prompt": "a __animal__ in the snow", "seed": 11,
                                    "negative_prompt": "__style__", "steps": 2, "sampler": "Euler",
                                    "width": TINY_SIZE, "height": TINY_SIZE, "batch_size": 2}],
                         optimizer={"trials": 2})
    runner = Runner(config, sd1_host)
    final = run_to_end(runner)
    assert final.trials == 2
    images = [e for e in runner.history if isinstance(e, ev.ImageScored)]
    assert sorted({(e.trial, e.index) for e in images}) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert {e.prompt for e in images} == {expand("a __animal__ in the snow", cards, 11)}
    assert {e.negative_prompt for e in images} == {expand("__style__", cards, 12)}
    prompt, negative = images[0].prompt, images[0].negative_prompt
    assert prompt.removeprefix("a ").removesuffix(" in the snow") in ANIMALS
    assert negative in {"blurry", "low contrast", "grainy"}


def test_missing_wildcard_file_is_a_config_error_naming_the_set_and_file(sd1_host, tiny_sd1_paths,
                                                                        tiny_sd1_config_dir, cards,
                                                                        tmp_path):
    config = make_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path / "runs", wildcards_dir=str(cards),
                         payloads=[{"name": "p", "prompt": "a __plant__", "steps": 2, "sampler": "Euler",
                                    "width": TINY_SIZE, "height": TINY_SIZE}])
    with pytest.raises(ConfigError) as info:
        run_to_end(Runner(config, sd1_host))
    assert "payloads[0]" in str(info.value) and str(cards / "plant.txt") in str(info.value)


def test_fixing_a_missing_wildcard_lets_the_same_run_start(sd1_host, tiny_sd1_paths, tiny_sd1_config_dir,
                                                           cards, tmp_path):
    config = make_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path / "runs", wildcards_dir=str(cards),
                         payloads=[{"name": "p", "prompt": "a __plant__", "steps": 2, "sampler": "Euler",
                                    "width": TINY_SIZE, "height": TINY_SIZE}], optimizer={"trials": 1})
    with pytest.raises(ConfigError):
        run_to_end(Runner(config, sd1_host))
    (cards / "plant.txt").write_text("fern\n", encoding="utf-8")
    assert run_to_end(Runner(config, sd1_host)).trials == 1
