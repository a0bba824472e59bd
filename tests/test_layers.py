"""The layer rules (docs/architecture.md): core modules never import a WebUI's ``modules``,
``gradio``, fastapi or pydantic, not even inside a function; the UI never imports the CLI; no two
modules of sd_optim import each other, directly or through others; functions fit on a screen.

The import checks run twice: statically, over every import statement of every module (those inside
functions too), and in a fresh interpreter whose import system refuses the WebUI packages, so a
module that imports one of them at import time fails here exactly as it would in a WebUI that
lacks it (or has the other pydantic major version).
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

import sd_optim

ROOT = Path(__file__).resolve().parents[1]
WEBUI = ["modules", "gradio", "modules_forge", "backend", "ldm_patched"]
# hosts/ modules other than these wrap one WebUI each and may import its packages.
CORE_HOSTS = {"sd_optim.hosts", "sd_optim.hosts.base", "sd_optim.hosts.diffusers_host",
              "sd_optim.hosts.diffusers_keymap", "sd_optim.hosts.standalone"}
NOT_CORE = ("sd_optim.ui",)
ENTRY_POINTS = {"sd_optim.__main__"}  # runs the CLI when imported
UI_PACKAGES = {"gradio", "fastapi", "starlette", "pydantic", *WEBUI}
# the one lazy import of the UI the core may make: the CLI's ``app`` command serves the tab
LAZY_UI_ALLOWED = {("sd_optim.cli", "sd_optim.ui.app")}
MAX_FUNCTION_LINES = 100

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
    assert {"sd_optim", "sd_optim.config", "sd_optim.run.runner", "sd_optim.cli", "sd_optim.scoring.base",
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


def _module_files() -> dict[str, Path]:
    pkg = Path(sd_optim.__file__).parent
    files = {}
    for path in sorted(pkg.rglob("*.py")):
        parts = ("sd_optim", *path.relative_to(pkg).with_suffix("").parts)
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def _imports(name: str, path: Path, known: set[str]) -> tuple[set[str], set[str]]:
    """(the sd_optim modules, the other top-level packages) that ``path`` imports anywhere in it."""
    ours, others = set(), set()
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                (ours if alias.name.startswith("sd_optim") else others).add(
                    alias.name if alias.name.startswith("sd_optim") else alias.name.partition(".")[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if not target.startswith("sd_optim"):
                others.add(target.partition(".")[0])
                continue
            for alias in node.names:  # ``from pkg import submodule`` imports the submodule
                sub = f"{target}.{alias.name}"
                ours.add(sub if sub in known else target)
    return ours & known, others


def import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Every module's imports, read from its source: (sd_optim modules, other top-level packages)."""
    files = _module_files()
    ours, others = {}, {}
    for name, path in files.items():
        ours[name], others[name] = _imports(name, path, set(files))
    return ours, others


def _cycles(graph: dict[str, set[str]]) -> dict[str, list[str]]:
    """Each module that imports itself through others, with one such path back to it."""
    found = {}
    for start in sorted(graph):
        paths, seen = [[start]], {start}
        while paths and start not in found:
            path = paths.pop(0)  # breadth first: the shortest path back
            for child in sorted(graph.get(path[-1], ())):
                if child == start:
                    found[start] = [*path, start]
                    break
                if child not in seen:
                    seen.add(child)
                    paths.append([*path, child])
    return found


def test_the_cycle_finder_finds_a_cycle_through_three_modules():
    found = _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})
    assert found == {"a": ["a", "b", "c", "a"], "b": ["b", "c", "a", "b"], "c": ["c", "a", "b", "c"]}
    assert _cycles({"a": {"b"}, "b": set()}) == {}


def test_the_import_reader_sees_imports_inside_functions():
    ours, others = import_graph()
    assert "sd_optim.ui.app" in ours["sd_optim.cli"]  # ``cmd_app`` imports it inside the function
    assert "gradio" in others["sd_optim.ui.app"]


def test_no_two_modules_import_each_other():
    ours, _ = import_graph()
    assert _cycles(ours) == {}, "import cycles (imports inside functions count)"


def test_core_never_imports_the_ui_or_a_webui_package_even_lazily():
    ours, others = import_graph()
    core = set(core_modules())
    bad = {m: sorted(others[m] & UI_PACKAGES) for m in core if others[m] & UI_PACKAGES}
    assert not bad, f"core modules importing UI / WebUI packages: {bad}"
    into_ui = {(m, t) for m in core for t in ours[m] if t.startswith(NOT_CORE)} - LAZY_UI_ALLOWED
    assert not into_ui, f"core modules importing sd_optim.ui: {sorted(into_ui)}"


def test_the_ui_never_imports_the_cli():
    ours, _ = import_graph()
    bad = {m: sorted(t for t in ours[m] if t in ("sd_optim.cli", "sd_optim.__main__"))
           for m in ours if m.startswith(NOT_CORE)}
    assert not {m: t for m, t in bad.items() if t}


def test_functions_fit_on_a_screen():
    long = []
    for name, path in _module_files().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"
