"""Block definitions without code (sd_optim/search/block_defs.py): YAML files that name blocks by
key patterns, registered with sd-mecha as block configs; the shipped ones and a user's folder."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import safetensors.torch
import sd_mecha
import torch
from sd_mecha.extensions import model_configs
from test_runner import make_config, run

from sd_optim.errors import ConfigError
from sd_optim.search import block_defs
from sd_optim.search.blocks import key_to_block
from sd_optim.search.planning import make_planner
from sd_optim.ui import form as fm

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(block_defs.SHIPPED_DIR.glob("*.yaml"))


def test_six_definitions_ship_for_sd1_and_sdxl():
    assert [p.stem for p in SHIPPED] == ["sd1-attn_resnet", "sd1-fine", "sd1-resolution", "sdxl-attn_resnet",
                                         "sdxl-fine", "sdxl-resolution"]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_each_shipped_definition_gives_every_key_one_block_and_sd_mecha_converts_with_it(path):
    defn = block_defs.read_definition(path)
    keys = list(model_configs.resolve(defn.model_config).keys())
    blocks = block_defs.assignment(defn)  # raises on a key claimed twice or by none
    assert list(blocks) == keys and set(blocks.values()) <= set(defn.blocks)
    assert block_defs.register(defn) == path.stem == defn.identifier
    assert key_to_block(defn.identifier, defn.model_config) == blocks  # sd-mecha's converter agrees


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_keys_claimed_twice_or_by_no_block_are_named_with_examples(tmp_path):
    twice = write(tmp_path, "twice", """\
        name: twice
        model_config: sd1-ldm
        blocks:
          UNET: ["model.diffusion_model.*"]
          ATTN: ["model.diffusion_model.*.attn1.*"]
        catch_all: REST
        """)
    with pytest.raises(ConfigError) as e:
        block_defs.assignment(block_defs.read_definition(twice))
    (problem,) = e.value.problems
    assert problem.field == "twice.yaml: blocks.ATTN" and "claimed by UNET and ATTN, e.g. model.diffusion_model." \
        in problem.message
    lonely = write(tmp_path, "lonely", """\
        name: lonely
        model_config: sd1-ldm
        blocks:
          UNET: ["model.diffusion_model.*"]
        """)
    with pytest.raises(ConfigError) as e:
        block_defs.assignment(block_defs.read_definition(lonely))
    assert "keys of sd1-ldm belong to no block, e.g. " in str(e.value) and "catch_all" in str(e.value)


@pytest.mark.parametrize(("text", "field", "words"), [
    ("name: Bad Name\nmodel_config: sd1-ldm\nblocks: {A: ['*']}\n", "x.yaml: name", "lower-case"),
    ("name: ok\nmodel_config: sd2\nblocks: {A: ['*']}\n", "x.yaml: model_config", "sd1-ldm or sdxl-sgm"),
    ("name: ok\nmodel_config: sd1-ldm\nblocks: []\n", "x.yaml: blocks", "mapping of block names"),
    ("name: ok\nmodel_config: sd1-ldm\nblocks: {A: {keys: ['*'], but: ['x']}}\n", "x.yaml: blocks.A", "except"),
    ("name: ok\nmodel_config: sd1-ldm\nblocks: {A: ['*']}\ncolour: red\n", "x.yaml: colour", "not a field"),
])
def test_a_definition_that_is_not_one_names_its_field(tmp_path, text, field, words):
    with pytest.raises(ConfigError) as e:
        block_defs.read_definition(write(tmp_path, "x", text))
    assert any(p.field == field and words in p.message for p in e.value.problems), e.value.problems


def test_a_run_with_a_shipped_definition_exports_a_recipe_plain_sd_mecha_merges(
        sd1_host, tiny_sd1_paths, tiny_sd1_config_dir, tmp_path):
    """best.mecha holds each key's value (the blocks resolved), so plain sd-mecha merges it without
    the definition; a script that wants the block config itself registers it (register_folder)."""
    config = make_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path,
                         guide={"blocks": "sd1-attn_resnet", "diffuser": ["all"], "clip_l": [{"strategy": "none"}]},
                         optimizer={"sampler": "random", "trials": 2, "seed": 0, "study": "attn"})
    names = {p.name for p in make_planner(config, "sd1-ldm").space.params}
    assert {"diffuser.IN_ATTN.alpha", "diffuser.MID_RES.alpha", "diffuser.OUT_OTHER.alpha"} <= names
    done = run(config, sd1_host)
    assert done.completed == 2
    recipe = tmp_path / "attn" / "best.mecha"
    expected = tmp_path / "expected.safetensors"
    sd_mecha.merge(sd_mecha.deserialize(recipe.read_text(encoding="utf-8")), output=expected,
                   merge_dtype=torch.float32, output_dtype=torch.float32)
    script = textwrap.dedent(f"""\
        import sys, sd_mecha, torch
        recipe = sd_mecha.deserialize(open({str(recipe)!r}, encoding="utf-8").read())
        sd_mecha.merge(recipe, output={str(tmp_path / 'plain.safetensors')!r}, merge_dtype=torch.float32,
                       output_dtype=torch.float32)
        sys.exit("sd_optim was imported" if any(m.startswith("sd_optim") for m in sys.modules) else 0)
        """)
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    plain, ours = (safetensors.torch.load_file(str(p)) for p in (tmp_path / "plain.safetensors", expected))
    assert plain.keys() == ours.keys() and all(torch.equal(plain[k], ours[k]) for k in ours)
    # a script of one's own: the definition registered, sd-mecha converts block values with it
    script = textwrap.dedent("""\
        import sd_mecha
        from sd_optim.search.block_defs import SHIPPED_DIR, register_folder
        assert "sd1-attn_resnet" in register_folder(SHIPPED_DIR)
        blocks = sd_mecha.literal({"IN_ATTN": 0.25}, config="sd1-attn_resnet")
        node = sd_mecha.convert(blocks, "sd1-ldm")
        print(type(node).__name__)
        """)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr[-2000:]


def test_a_users_folder_adds_its_definitions(sd1_host, tiny_sd1_paths, tiny_sd1_config_dir, tmp_path):
    write(tmp_path / "blocks", "halves", """\
        name: halves_test
        model_config: sd1-ldm
        blocks:
          DOWN: ["model.diffusion_model.input_blocks.*"]
          UP:
            keys: ["model.diffusion_model.*"]
            except: ["model.diffusion_model.input_blocks.*"]
        catch_all: REST
        """)
    config = make_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path, blocks_dir=str(tmp_path / "blocks"),
                         guide={"blocks": "sd1-halves_test", "diffuser": ["all"], "clip_l": [{"strategy": "none"}]})
    assert [p.name for p in make_planner(config, "sd1-ldm").space.params] == ["diffuser.DOWN.alpha",
                                                                                 "diffuser.UP.alpha"]
    missing = make_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path, blocks_dir=str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="blocks_dir: not a folder"):
        make_planner(missing, "sd1-ldm")
    unknown = make_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path,
                          guide={"blocks": "sd1-nothing", "diffuser": ["all"]})
    with pytest.raises(ConfigError, match=r"guide.blocks: .*block configs: sd1-supermerger_blocks, .*sd1-fine"):
        make_planner(unknown, "sd1-ldm")


def test_the_tabs_folder_control_round_trips():
    data = {"models": ["/m/a.safetensors", "/m/b.safetensors"], "payloads": [{"prompt": "x"}],
            "scorers": ["image_stats"], "blocks_dir": "/my/blocks", "guide": {"blocks": "sd1-fine", "diffuser": ["all"]}}
    controls = fm.data_to_form(data)
    assert controls["blocks_dir"] == "/my/blocks" and controls["blocks"] == "sd1-fine"
    assert fm.form_to_data(controls)["blocks_dir"] == "/my/blocks"


def test_the_example_definition_registers():
    folder = Path(__file__).resolve().parents[1] / "examples" / "blocks"
    assert block_defs.register_folder(folder) == ["sd1-down_up"]
    assert set(key_to_block("sd1-down_up", "sd1-ldm").values()) == {"DOWN", "MIDDLE", "UP", "TEXT", "VAE", "REST"}
