"""The layer rule of DESIGN.md: core modules never import a WebUI's ``modules``, ``gradio`` or pydantic.

Each check runs in a fresh interpreter whose import system refuses the WebUI packages, so a
module that imports one of them at import time fails here exactly as it would in a WebUI that
lacks it (or has the other pydantic major version).
"""

import json
import subprocess
import sys
from pathlib import Path

import sd_optim

ROOT = Path(__file__).resolve().parents[1]
WEBUI = ["modules", "gradio", "modules_forge", "backend", "ldm_patched"]
# hosts/ modules other than these wrap one WebUI each and may import its packages.
CORE_HOSTS = {"sd_optim.hosts.base", "sd_optim.hosts.diffusers_host", "sd_optim.hosts.diffusers_keymap"}
NOT_CORE = ("sd_optim.ui", "sd_optim.app")
ENTRY_POINTS = {"sd_optim.__main__"}  # runs the CLI when imported

# argv[1]: comma-separated top-level names to refuse; argv[2:]: modules to import.
# Prints {"failed": {module: traceback}, "blocker_works": bool, "pydantic_by": module or null}.
PROBE = r"""
import importlib, importlib.abc, json, sys, traceback

class Refuse(importlib.abc.MetaPathFinder):
    def __init__(self, names):
        self.names = names

    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] in self.names:
            raise ImportError(f"{fullname} is not importable here (sd-optim layer test)")
        return None

blocked = set(sys.argv[1].split(","))
sys.meta_path.insert(0, Refuse(blocked))
try:
    import gradio  # installed in the test environment: must be refused
    blocker_works = False
except ImportError:
    blocker_works = True
failed, pydantic_by = {}, None
for name in sys.argv[2:]:
    try:
        importlib.import_module(name)
    except BaseException:
        failed[name] = traceback.format_exc()
    if pydantic_by is None and "pydantic" in sys.modules:
        pydantic_by = name
print(json.dumps({"failed": failed, "blocker_works": blocker_works, "pydantic_by": pydantic_by}))
"""


def core_modules() -> list[str]:
    """Every module file under sd_optim/ that belongs to the core (namespace folders included)."""
    pkg = Path(sd_optim.__file__).parent
    names = []
    for path in sorted(pkg.rglob("*.py")):
        parts = ("sd_optim", *path.relative_to(pkg).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join(parts)
        if name in ENTRY_POINTS or name.startswith(tuple(f"{n}." for n in NOT_CORE)) or name in NOT_CORE:
            continue
        if name.startswith("sd_optim.hosts.") and name not in CORE_HOSTS:
            continue
        names.append(name)
    return names


def probe(blocked: list[str], modules: list[str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, ",".join(blocked), *modules], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_discovery_finds_the_core_modules():
    found = set(core_modules())
    assert {"sd_optim", "sd_optim.config", "sd_optim.runner", "sd_optim.cli", "sd_optim.scoring.base",
            "sd_optim.merging", *CORE_HOSTS} <= found
    assert "sd_optim.__main__" not in found


def test_core_imports_without_webui_packages_or_pydantic():
    modules = core_modules()
    result = probe([*WEBUI, "pydantic"], modules)
    assert result["blocker_works"]
    assert not result["failed"], "\n\n".join(f"{m}:\n{tb}" for m, tb in result["failed"].items())


def test_no_core_module_imports_pydantic():
    result = probe(WEBUI, core_modules())
    assert not result["failed"], list(result["failed"])
    assert result["pydantic_by"] is None, f"importing {result['pydantic_by']} loaded pydantic"
