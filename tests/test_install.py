"""install.py: what it decides to install, and one real run through a fake WebUI ``launch`` into a throwaway venv.

The end-to-end test builds dummy wheels (metadata only) under the real package names, "installs a
WebUI" into a fresh venv from them (Forge's tqdm pin, an old scipy, torch), then lets the fake
``launch.run_extension_installer`` run install.py there with ``--no-index --find-links``. The local
index also offers newer numpy/torch/tqdm and an optuna that needs numpy 2: any of them ending up in
the venv would mean a WebUI pin was moved.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FAKE_WEBUI = Path(__file__).resolve().parent / "fakes" / "launch"


def _load_install():
    spec = importlib.util.spec_from_file_location("sd_optim_install", ROOT / "install.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


install = _load_install()
Need = install.Need


# --- decisions, with a made-up set of installed distributions ----------------------------------

def test_missing_and_too_old_are_needed_satisfied_are_not():
    installed = {"sd-mecha": "1.1.8", "optuna": "3.6.1", "numpy": "1.26.2", "pyyaml": "6.0.1"}
    table = [Need("sd-mecha", ">=1.1.8"), Need("optuna", ">=4.0"), Need("numpy"), Need("PyYAML"), Need("cmaes")]
    assert [n.name for n in install.plan(table, installed)] == ["optuna", "cmaes"]


def test_versions_compare_as_versions_not_strings():
    assert install.satisfies("1.10.0", ">=1.9")
    assert not install.satisfies("1.1.7", ">=1.1.8")
    assert install.satisfies("4.0.0rc1", ">=3.9")
    assert install.satisfies("2.1.2+cu121", ">=2.1.0")
    assert not install.satisfies("not-a-version", ">=1")
    assert install.satisfies("anything", "")


def test_without_packaging_a_minimum_is_still_checked(monkeypatch):
    monkeypatch.setattr(install, "_packaging", lambda: None)
    assert install.satisfies("1.10.0", ">=1.9")
    assert not install.satisfies("1.1.7", ">=1.1.8")
    assert [n.name for n in install.plan([Need("optuna", ">=4.0")], {"optuna": "3.6.1"})] == ["optuna"]


def test_webui_packages_are_never_planned_even_when_missing():
    table = [Need(name) for name in ("torch", "torchvision", "gradio", "transformers", "open_clip_torch",
                                     "Diffusers", "tqdm")]
    assert [n.name for n in install.plan(table, {})] == ["tqdm"]


def test_a_missing_webui_package_the_extension_uses_gets_one_line():
    lines = install.missing_owned({"gradio": "3.41.2", "open-clip-torch": "2.20.0"}, in_webui=True)
    assert len(lines) == 1 and "torch is not installed" in lines[0] and "never installs" in lines[0]
    assert install.missing_owned({"torch": "2.1.2", "open-clip-torch": "2.20.0"}, in_webui=False) == []
    assert "gradio" in install.missing_owned({"torch": "2.1.2", "open-clip-torch": "2.20.0"}, in_webui=True)[0]


def test_constraints_pin_everything_installed_except_what_is_installed_now():
    installed = {"numpy": "1.26.2", "torch": "2.1.2+cu121", "optuna": "3.6.1", "tqdm": "4.66.1",
                 "broken": "not a version"}
    text = install.constraints_text(installed, exclude={"optuna"})
    assert text.splitlines() == ["numpy==1.26.2", "torch==2.1.2+cu121", "tqdm==4.66.1"]


def test_installed_versions_uses_canonical_names():
    found = install.installed_versions()
    assert found["pyyaml"] and found["sd-mecha"]  # PyYAML, sd_mecha on disk


def test_no_deps_packages_get_their_missing_dependencies_and_notes_for_old_ones(monkeypatch):
    declared = {"sd-mecha": [Need("torch", ">=2.1.0"), Need("tqdm", ">=4.66.2"), Need("fuzzywuzzy", ">=0.18.0"),
                             Need("numpy", ">=1.26.0")]}
    monkeypatch.setattr(install, "declared_dependencies", lambda name: declared[name])
    installed = {"sd-mecha": "1.1.8", "tqdm": "4.66.1", "numpy": "1.26.2"}
    missing, notes = install.unmet_dependencies([Need("sd-mecha", ">=1.1.8", no_deps=True)], installed)
    assert [n.spec for n in missing] == ["fuzzywuzzy>=0.18.0"]  # torch: WebUI-owned, never installed
    assert notes == ["sd-optim: note: sd-mecha declares tqdm>=4.66.2; kept the installed tqdm 4.66.1"]


def test_declared_dependencies_reads_real_metadata_without_extras():
    deps = {n.name: n.specifier for n in install.declared_dependencies("optuna")}
    assert "alembic" in deps and "sqlalchemy" in deps
    assert "sphinx" not in deps and "boto3" not in deps  # extras "document" / "optional"


def test_shell_arguments_survive_the_webui_shell():
    args = ["install", "sd-mecha>=1.1.8", "-c", "/tmp/with space/c.txt"]
    assert shlex.split(" ".join(install._shell_arg(a) for a in args)) == args
    with pytest.raises(ValueError, match="cannot pass"):
        install._shell_arg("$HOME/c.txt")


def test_nothing_needed_prints_nothing_and_runs_no_pip(monkeypatch, capsys):
    monkeypatch.setattr(install, "run_pip", lambda *a: pytest.fail("pip ran"))
    monkeypatch.setattr(install, "_webui_launch", lambda: None)
    install.main([Need("pyyaml"), Need("sd-mecha", ">=1.1.8", no_deps=True), Need("torch")])
    assert capsys.readouterr().out == ""


def test_a_pip_failure_is_explained_and_raised(monkeypatch, capsys):
    def failing(args, desc):
        raise RuntimeError("Couldn't install x")

    monkeypatch.setattr(install, "run_pip", failing)
    monkeypatch.setattr(install, "_webui_launch", lambda: None)
    with pytest.raises(RuntimeError, match="Couldn't install"):
        install.main([Need("surely-not-installed-dist", ">=1")])
    assert 'could not install "surely-not-installed-dist>=1"' in capsys.readouterr().out


# --- end to end: a fake WebUI runs install.py in a throwaway venv --------------------------------

def _wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> None:
    """A metadata-only wheel ``name==version`` declaring ``requires``."""
    dist = f"{name.replace('-', '_')}-{version}"
    files = {
        f"{dist}.dist-info/METADATA": "Metadata-Version: 2.1\nName: {}\nVersion: {}\n{}".format(
            name, version, "".join(f"Requires-Dist: {r}\n" for r in requires)),
        f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b'=').decode()},"
              f"{len(text.encode())}" for path, text in files.items()]
    files[f"{dist}.dist-info/RECORD"] = "\n".join([*record, f"{dist}.dist-info/RECORD,,"]) + "\n"
    with zipfile.ZipFile(folder / f"{dist}-py3-none-any.whl", "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)


SD_MECHA_REQUIRES = ("click>=8.1.7", "numpy>=1.26.0", "torch>=2.1.0", "scipy>=1.14.0", "safetensors>=0.4.2",
                     "tqdm>=4.66.2", "fuzzywuzzy>=0.18.0", "python-Levenshtein", "PyYAML>=6.0.1",
                     'pytest; extra == "dev"')
WEBUI = {"numpy": "1.26.2", "tqdm": "4.66.1", "pillow": "9.5.0", "safetensors": "0.4.2", "pyyaml": "6.0.1",
         "scipy": "1.11.4", "click": "8.1.7", "torch": "2.1.2", "gradio": "3.41.2", "open-clip-torch": "2.20.0"}


@pytest.fixture(scope="module")
def webui_venv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("install")
    index = tmp / "index"
    index.mkdir()
    for name, version in WEBUI.items():
        _wheel(index, name, version)
    for name, version in {"numpy": "2.0.0", "tqdm": "4.67.0", "torch": "2.5.0", "scipy": "1.14.1"}.items():
        _wheel(index, name, version)  # newer than the WebUI's: must stay unused
    _wheel(index, "sd-mecha", "1.1.8", SD_MECHA_REQUIRES)
    _wheel(index, "optuna", "4.0.0", ("alembic>=1.5.0", "colorlog", "numpy", "sqlalchemy>=1.4.2", "tqdm", "PyYAML"))
    _wheel(index, "optuna", "4.1.0", ("alembic>=1.5.0", "colorlog", "numpy>=2", "sqlalchemy>=1.4.2", "tqdm"))
    for name in ("alembic", "colorlog", "sqlalchemy", "cmaes", "fuzzywuzzy", "python-Levenshtein", "pytest"):
        _wheel(index, name, "1.5.0" if name == "alembic" else "2.0.0")

    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(index), "PIP_DISABLE_PIP_VERSION_CHECK": "1",
           "PIP_NO_CACHE_DIR": "1", "PYTHONPATH": ""}
    env.pop("INDEX_URL", None)
    env.pop("COMMANDLINE_ARGS", None)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *(f"{n}=={v}" for n, v in WEBUI.items())],
                   check=True, env=env)
    extension = tmp / "extensions" / "sd-optim"
    extension.mkdir(parents=True)
    (extension / "install.py").write_bytes((ROOT / "install.py").read_bytes())
    return python, extension, env, tmp


def _versions(python: Path) -> dict[str, str]:
    code = ("import importlib.metadata as m, json; "
            "print(json.dumps({d.metadata['Name'].lower(): d.version for d in m.distributions()}))")
    out = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def _webui_start(python: Path, extension: Path, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    code = f"import launch; launch.run_extension_installer({str(extension)!r})"
    return subprocess.run([str(python), "-c", code], cwd=cwd, capture_output=True, text=True,
                          env={**env, "PYTHONPATH": str(FAKE_WEBUI)}, check=True)


def test_webui_start_installs_missing_keeps_pins_then_is_silent(webui_venv):
    python, extension, env, tmp = webui_venv

    first = _webui_start(python, extension, env, cwd=tmp)
    assert first.stderr == ""
    lines = first.stdout.splitlines()
    assert lines[0] == "Installing sd-optim requirements: sd-mecha>=1.1.8 (without dependencies)"
    assert lines[1].startswith("Installing sd-optim requirements: optuna>=4.0, cmaes, fuzzywuzzy>=0.18.0")
    have = _versions(python)
    assert {n: have[n] for n in WEBUI} == WEBUI  # numpy, tqdm, scipy, torch... all where the WebUI had them
    assert have["sd-mecha"] == "1.1.8"
    assert have["optuna"] == "4.0.0"  # 4.1.0 would have needed numpy 2
    assert {"cmaes", "alembic", "colorlog", "sqlalchemy", "fuzzywuzzy", "python-levenshtein"} <= set(have)
    assert "pytest" not in have  # an extra of sd-mecha, not a dependency
    assert "sd-optim: installed sd-mecha 1.1.8" in lines and "sd-optim: installed optuna 4.0.0" in lines
    assert "sd-optim: note: sd-mecha declares tqdm>=4.66.2; kept the installed tqdm 4.66.1" in lines
    assert "sd-optim: note: sd-mecha declares scipy>=1.14.0; kept the installed scipy 1.11.4" in lines
    assert not any("torch" in line for line in lines)

    second = _webui_start(python, extension, env, cwd=tmp)
    assert (second.stdout, second.stderr) == ("", "")

    # A dependency removed by hand comes back at the next start, standalone too (no launch module).
    subprocess.run([str(python), "-m", "pip", "uninstall", "-y", "-q", "fuzzywuzzy"], check=True, env=env)
    third = subprocess.run([str(python), str(extension / "install.py")], cwd=tmp, capture_output=True, text=True,
                           env=env, check=True)
    assert third.stdout.splitlines() == ["Installing sd-optim requirements: fuzzywuzzy>=0.18.0",
                                         "sd-optim: installed fuzzywuzzy 2.0.0"]
    assert _versions(python)["numpy"] == "1.26.2"


def test_webui_reports_a_failed_install_and_goes_on(webui_venv):
    python, extension, env, tmp = webui_venv
    _webui_start(python, extension, env, cwd=tmp)  # everything in place, whichever test ran first
    bad = {**env, "PIP_FIND_LINKS": str(tmp / "nowhere")}
    subprocess.run([str(python), "-m", "pip", "uninstall", "-y", "-q", "cmaes"], check=True, env=env)
    result = _webui_start(python, extension, bad, cwd=tmp)
    assert "*** Error running install.py for extension" in result.stderr
    assert 'sd-optim: could not install "cmaes"' in result.stderr
    assert "Couldn't install sd-optim requirements:" in result.stderr


def test_a_database_url_in_the_webui_settings_brings_its_driver(tmp_path):
    settings = tmp_path / "config.json"
    assert install.driver_needs(str(settings)) == []  # no settings file yet
    for url, names in (("postgresql://u@db/s", ["psycopg", "psycopg-binary"]),
                       ("postgresql+psycopg://u@db/s", ["psycopg", "psycopg-binary"]),
                       ("mysql+pymysql://u@db/s", ["pymysql"]), ("", []), ("sqlite:///x.db", [])):
        settings.write_text(json.dumps({"sd_optim_storage": url}), encoding="utf-8")
        assert [n.name for n in install.driver_needs(str(settings))] == names, url
    settings.write_text("{not json", encoding="utf-8")
    assert install.driver_needs(str(settings)) == []


def test_the_settings_file_is_found_as_the_webui_finds_it(tmp_path):
    cwd = str(tmp_path)
    assert install.settings_file("", cwd) == str(tmp_path / "config.json")
    assert install.settings_file("--data-dir /data --xformers", cwd) == "/data/config.json"
    assert install.settings_file("--ui-settings-file my.json", cwd) == str(tmp_path / "my.json")
    assert install.settings_file("--ui-settings-file=/etc/w.json", cwd) == "/etc/w.json"
