"""Prompt sets read back from A1111 infotexts and from the images that carry them."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sd_optim.ui.infotext import infotext_from_png, infotext_pairs, parse_infotext, prompt_set_from_png

PARAMS = "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 123, Size: 512x768, Model hash: 45dee52b"

PARSED = [
    pytest.param(  # A1111 1.10: multi-line prompts, schedule type, a quoted value with commas
        "a castle on a hill,\ngolden hour\nNegative prompt: blurry,\nlowres\n"
        'Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 5.5, Seed: 4242, '
        'Size: 832x1216, Model hash: 6ce0161689, Lora hashes: "detail: 1a2b, style: 3c4d", '
        "Version: v1.10.1",
        {"prompt": "a castle on a hill,\ngolden hour", "negative_prompt": "blurry,\nlowres",
         "steps": 30, "sampler": "DPM++ 2M", "scheduler": "Karras", "cfg_scale": 5.5, "seed": 4242,
         "width": 832, "height": 1216},
        id="a1111 1.10",
    ),
    pytest.param(  # A1111 1.8: the schedule is part of the sampler's name, and stays there
        "portrait\nNegative prompt: ugly\nSteps: 25, Sampler: DPM++ 2M Karras, CFG scale: 7, "
        "Seed: 965400086, Size: 512x512, Model hash: 45dee52b, Version: v1.8.0",
        {"prompt": "portrait", "negative_prompt": "ugly", "steps": 25, "sampler": "DPM++ 2M Karras",
         "cfg_scale": 7.0, "seed": 965400086, "width": 512, "height": 512},
        id="a1111 1.8",
    ),
    pytest.param(  # no negative prompt line: no negative_prompt field
        f"a cat\n{PARAMS}",
        {"prompt": "a cat", "steps": 20, "sampler": "Euler a", "cfg_scale": 7.0, "seed": 123,
         "width": 512, "height": 768},
        id="no negative",
    ),
    pytest.param(  # quoted values hide labels and commas from the parser
        'a cat\nLora hashes: "Steps: 99, Seed: 7", Steps: 20, Sampler: "Euler, a", CFG scale: 7, '
        'TI hashes: "x: \\"1, 2\\"", Seed: 123',
        {"prompt": "a cat", "steps": 20, "sampler": "Euler, a", "cfg_scale": 7.0, "seed": 123},
        id="quoted values",
    ),
    pytest.param(  # an empty prompt (A1111 writes no line for it)
        f"Negative prompt: lowres\n{PARAMS}",
        {"prompt": "", "negative_prompt": "lowres", "steps": 20, "sampler": "Euler a", "cfg_scale": 7.0,
         "seed": 123, "width": 512, "height": 768},
        id="empty prompt",
    ),
    pytest.param(  # attention syntax and blank lines inside a prompt; only some fields
        "(masterpiece:1.2), 1girl\n\nstyle: anime, mood: calm\nSteps: 8, Sampler: LCM, CFG scale: 1.5",
        {"prompt": "(masterpiece:1.2), 1girl\n\nstyle: anime, mood: calm", "steps": 8, "sampler": "LCM",
         "cfg_scale": 1.5},
        id="prompt with colons",
    ),
    pytest.param(  # Windows line ends, surrounding blank lines
        f"\r\n a dog \r\nNegative prompt:  cat \r\n{PARAMS}\r\n\r\n",
        {"prompt": "a dog", "negative_prompt": "cat", "steps": 20, "sampler": "Euler a", "cfg_scale": 7.0,
         "seed": 123, "width": 512, "height": 768},
        id="crlf",
    ),
]


@pytest.mark.parametrize(("text", "expected"), PARSED)
def test_parse_infotext(text, expected):
    assert parse_infotext(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("", "not an A1111 infotext"),
    ("just a prompt, nothing else", "not an A1111 infotext"),
    ("a cat\nstyle: anime, mood: calm", "not an A1111 infotext"),  # two pairs are prompt text
    ('{"prompt": "a cat", "steps": 20, "seed": 1}', "not an A1111 infotext"),  # ComfyUI / Fooocus JSON
    ("a cat\nSteps: many, Sampler: Euler a, CFG scale: 7", "Steps must be a whole number, got 'many'"),
    ("a cat\nSteps: 20, Sampler: Euler a, CFG scale: high", "CFG scale must be a number, got 'high'"),
    ("a cat\nSteps: 20, Sampler: Euler a, Size: 512", "Size must be WIDTHxHEIGHT, got '512'"),
])
def test_what_is_not_an_infotext_is_refused_with_the_reason(text, message):
    with pytest.raises(ValueError, match=message):
        parse_infotext(text)


@pytest.mark.parametrize(("line", "pairs"), [
    ('ab: 1, bc d: "x, y", de-f/g: "q: \\"r\\""', [("ab", "1"), ("bc d", "x, y"), ("de-f/g", 'q: "r"')]),
    ('ab: "no closing, cd: 2', [("ab", '"no closing'), ("cd", "2")]),  # a broken quote is plain text
    ('ab: "x" y, cd: 2', [("ab", '"x" y'), ("cd", "2")]),  # a quote must end the value
    ('ab: "bad \\q escape", cd: 2', [("ab", '"bad \\q escape"'), ("cd", "2")]),  # kept as written
    ("(masterpiece:1.2), x: y, : z, kv: v", [("masterpiece", "1.2)"), ("kv", "v")]),  # labels: 2+ chars
    ("Model: a:b, Seed: 1", [("Model", "a:b"), ("Seed", "1")]),
])
def test_infotext_pairs(line, pairs):
    assert infotext_pairs(line) == pairs


def test_reads_back_what_sd_optims_standalone_host_writes():
    from sd_optim.hosts.base import GenerationJob
    from sd_optim.hosts.diffusers_host import DiffusersHost
    from sd_optim.run.runner import trial_infotext

    job = GenerationJob(prompt="a castle, at dusk\n(detailed:1.1)", negative_prompt="blurry, lowres",
                        seed=10, steps=12, cfg_scale=6.5, sampler="DPM++ 2M SDE", scheduler="Karras",
                        width=640, height=384,
                        infotext_params=trial_infotext(None, 3, {"alpha": 0.25, "block_IN00": 0.5}))
    # infotext() reads nothing from the host but its checkpoint path
    host = SimpleNamespace(path=Path("models/merge: a, b.safetensors"))
    text = DiffusersHost.infotext(host, job, seed=11)
    assert "sd-optim params" in text  # the trial's own fields, quoted: they hold commas
    assert parse_infotext(text) == {
        "prompt": job.prompt, "negative_prompt": job.negative_prompt, "steps": 12,
        "sampler": "DPM++ 2M SDE", "scheduler": "Karras", "cfg_scale": 6.5, "seed": 11,
        "width": 640, "height": 384,
    }


def _png(path: Path, **text: str) -> Path:
    info = PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    return path


def _exif_image(path: Path, comment: bytes, fmt: str) -> Path:
    exif = Image.Exif()
    exif[0x8769] = {0x9286: comment}  # Exif IFD -> UserComment
    Image.new("RGB", (8, 8)).save(path, fmt, exif=exif.tobytes())
    return path


def test_prompt_set_from_a_png_written_with_pnginfo(tmp_path):
    text, expected = PARSED[0].values
    png = _png(tmp_path / "00001-4242.png", parameters=text)
    assert infotext_from_png(png) == text
    assert infotext_from_png(io.BytesIO(png.read_bytes())) == text
    assert prompt_set_from_png(png) == expected


def test_non_latin_text_survives_the_png_chunk(tmp_path):
    text = f"城の上の月, 夜\nNegative prompt: ぼやけた\n{PARAMS}"  # PIL writes it as an iTXt chunk
    fields = prompt_set_from_png(_png(tmp_path / "a.png", parameters=text))
    assert (fields["prompt"], fields["negative_prompt"]) == ("城の上の月, 夜", "ぼやけた")


@pytest.mark.parametrize(("fmt", "encoding"), [("JPEG", "utf-16-be"), ("WEBP", "utf-16-be"),
                                               ("JPEG", "utf-16-le")])
def test_infotext_from_exif_user_comment(tmp_path, fmt, encoding):
    # A1111 saves JPEG and WebP infotexts as "UNICODE\0" + UTF-16 (piexif writes big-endian)
    text = f"a cat, 猫\n{PARAMS}"
    image = _exif_image(tmp_path / f"a.{fmt.lower()}", b"UNICODE\0" + text.encode(encoding), fmt)
    assert infotext_from_png(image) == text
    assert prompt_set_from_png(image)["prompt"] == "a cat, 猫"


def test_an_image_without_infotext_is_refused_by_name(tmp_path):
    comfy = _png(tmp_path / "ComfyUI_00001_.png", prompt='{"3": {"class_type": "KSampler"}}')
    assert infotext_from_png(comfy) is None
    with pytest.raises(ValueError, match=r"ComfyUI_00001_\.png has no generation parameters \(infotext\)"):
        prompt_set_from_png(comfy)


def test_an_unreadable_infotext_is_refused_by_name(tmp_path):
    png = _png(tmp_path / "odd.png", parameters="a cat\nSteps: twenty, Sampler: Euler a, CFG scale: 7")
    with pytest.raises(ValueError, match=r"odd\.png: infotext: Steps must be a whole number"):
        prompt_set_from_png(png)


def test_a_file_that_is_not_an_image_raises_oserror(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image")
    with pytest.raises(OSError):
        prompt_set_from_png(path)
