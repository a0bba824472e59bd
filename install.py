"""Install what sd-optim needs into the WebUI's Python, without moving anything the WebUI pinned.

Every A1111-family WebUI runs this file at each start, so it must be quick and quiet when nothing is
needed. What the WebUIs do with it (AUTOMATIC1111 v1.10.1 = ``82a973c04367123ae98bd9abdf80d9eda9b910e2``;
Forge ``main`` = ``dfdcbab685e57677014f05a3309b48cc87383167``; reForge ``main`` =
``3b56b268ad9158ee8b30900973b6ccda4ec22241``):

- ``run_extension_installer`` runs ``"{python}" "<extension>/install.py"`` through ``run`` (a shell, the
  WebUI's working directory, output captured), with ``PYTHONPATH`` = the WebUI root + the old value;
  the captured stdout is printed after the script ends, and a non-zero exit is reported with its
  stdout/stderr by ``errors.report`` while the WebUI goes on (A1111 ``modules/launch_utils.py:228-241``,
  ``run`` ``:89-118``; Forge ``:237-250``, ``:98-127``; reForge ``:231-244``). No installer runs with
  ``--skip-install`` (A1111 ``:433-434``, Forge ``:483-484``, reForge ``:501-502``).
- ``import launch`` therefore works here; ``launch.py`` re-exports ``launch_utils``' ``python``
  (``sys.executable``), ``index_url`` (``$INDEX_URL``), ``is_installed`` and ``run_pip``
  (A1111 ``launch.py:1-24``, ``modules/launch_utils.py:23,25``). ``is_installed(name)`` only asks
  ``importlib.metadata.distribution`` / ``find_spec``: no version check (A1111 ``:121-132``, Forge
  ``:130-141``, reForge ``:124-135``). ``run_pip(command, desc=None, live=...)`` runs
  ``"{python}" -m pip {command} --prefer-binary[ --index-url {index_url}]`` in a shell after printing
  ``Installing {desc}``, raises ``RuntimeError`` naming the command and pip's output on failure, and does
  nothing when ``--skip-install`` is in ``COMMANDLINE_ARGS`` (A1111 ``:139-144`` and
  ``modules/paths_internal.py:12-13``; Forge ``:148-153``; reForge ``:142-147``).
- At each start A1111 and Forge compare every ``==`` pin in ``requirements_versions.txt`` with
  ``packaging.version`` and reinstall the whole file on any difference (A1111 ``:283-310,422-423``, Forge
  ``:328,472-473``). So ``packaging`` is always importable in a WebUI, and a pin moved by an extension
  is moved back at the next start. Forge pins ``tqdm==4.66.1`` (``requirements_versions.txt:40``) while
  sd-mecha 1.1.8 declares ``tqdm>=4.66.2``: installing sd-mecha with its dependencies under the
  WebUI's versions cannot resolve. sd-mecha is therefore installed with ``--no-deps``, and the
  dependencies it declares are installed here when missing, never upgraded.

Rules: a package is needed when it is missing or outside the versions in ``REQUIREMENTS``; pip runs
with a constraints file pinning every other installed distribution to its installed version, so it
picks versions that fit the WebUI or fails (the message and pip's output reach the WebUI's console);
torch, torchvision, gradio, transformers, open-clip-torch and diffusers are never installed (the
WebUI owns them; a missing one sd-optim uses gets one line). Nothing needed: no pip run, no output.
Outside a WebUI (``python install.py``) pip runs as ``sys.executable -m pip`` instead.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass

PREFIX = "sd-optim"


@dataclass(frozen=True)
class Need:
    """One distribution the extension needs and the versions that work (a PEP 440 specifier, "" = any)."""

    name: str
    specifier: str = ""
    no_deps: bool = False

    @property
    def spec(self) -> str:
        return self.name + self.specifier


REQUIREMENTS: tuple[Need, ...] = (
    Need("sd-mecha", ">=1.1.8", no_deps=True),
    Need("optuna", ">=4.0"),
    Need("cmaes"),  # optuna's CmaEsSampler (optimizer.sampler: cmaes) imports it only when used
    Need("scipy"),  # optuna's QMC and GP samplers; sd-mecha's ties and rebasin methods
    Need("safetensors"),
    Need("pyyaml"),
    Need("pillow"),
    Need("numpy"),
    Need("tqdm"),
)

# The database driver a storage URL needs (a study shared between WebUIs and workers), installed only
# when the WebUI's setting ``sd_optim_storage`` names such a database: psycopg 3 ships binary wheels
# (no compiler); MySQL through PyMySQL (pure Python).
DRIVERS: dict[str, tuple[Need, ...]] = {
    "postgresql": (Need("psycopg", ">=3.1"), Need("psycopg-binary", ">=3.1")),
    "mysql": (Need("pymysql"),),
}
STORAGE_SETTING = "sd_optim_storage"

# Never installed: the WebUI's own stack. The value says what of sd-optim stops working without it
# (None: nothing in a WebUI, so a missing one is not worth a line at every start).
WEBUI_OWNED: dict[str, str | None] = {
    "torch": "all of sd-optim (merging and generation)",
    "torchvision": None,
    "gradio": "the sd-optim tab",
    "transformers": None,
    "open-clip-torch": "the CLIP-based scorers",
    "diffusers": None,
}


def canonical(name: str) -> str:
    """The PEP 503 normalised form of a distribution name (``PyYAML`` -> ``pyyaml``, ``sd_mecha`` -> ``sd-mecha``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _packaging():
    """``(version, specifiers, requirements)`` modules: ``packaging`` (every WebUI has it), else pip's copy."""
    try:
        from packaging import requirements, specifiers, version
    except ImportError:
        try:
            from pip._vendor.packaging import requirements, specifiers, version
        except ImportError:
            return None
    return version, specifiers, requirements


def _release(text: str) -> tuple[int, ...]:
    match = re.match(r"\d+(?:\.\d+)*", text)
    parts = [int(p) for p in match.group(0).split(".")] if match else []
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def satisfies(version: str, specifier: str) -> bool:
    """Whether an installed ``version`` meets ``specifier``; an unparseable version does not."""
    if not specifier:
        return True
    pk = _packaging()
    if pk is None:  # no packaging at all: only ">=X[,...]" is understood, by release numbers
        return all(_release(version) >= _release(part.strip()[2:])
                   for part in specifier.split(",") if part.strip().startswith(">="))
    try:
        return pk[1].SpecifierSet(specifier).contains(pk[0].Version(version), prereleases=True)
    except pk[0].InvalidVersion:
        return False


def installed_versions() -> dict[str, str]:
    """``{canonical name: version}`` of every distribution this Python sees, first on ``sys.path`` winning."""
    importlib.invalidate_caches()
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name and dist.version:
            found.setdefault(canonical(name), dist.version)
    return found


def plan(requirements: tuple[Need, ...] | list[Need], installed: dict[str, str]) -> list[Need]:
    """The requirements to install: missing or outside their specifier; WebUI-owned names never."""
    needed = []
    for need in requirements:
        key = canonical(need.name)
        if key in WEBUI_OWNED:
            continue
        have = installed.get(key)
        if have is None or not satisfies(have, need.specifier):
            needed.append(need)
    return needed


def declared_dependencies(name: str) -> list[Need]:
    """What an installed distribution declares it needs, extras and other platforms left out."""
    pk = _packaging()
    deps = []
    for line in importlib.metadata.requires(name) or []:
        if pk is None:
            match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*([^;]*)", line)
            if ";" not in line and match:
                deps.append(Need(canonical(match.group(1)), match.group(2).strip().strip("()")))
            continue
        req = pk[2].Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        deps.append(Need(canonical(req.name), str(req.specifier)))
    return deps


def unmet_dependencies(no_deps: list[Need], installed: dict[str, str]) -> tuple[list[Need], list[str]]:
    """For the packages installed with ``--no-deps``: their missing dependencies (to install), and a note
    for each dependency present in a version they do not declare (kept: the WebUI may pin it)."""
    missing: dict[str, Need] = {}
    notes = []
    for parent in no_deps:
        if canonical(parent.name) not in installed:
            continue
        for dep in declared_dependencies(parent.name):
            if dep.name in WEBUI_OWNED:
                continue
            have = installed.get(dep.name)
            if have is None:
                missing.setdefault(dep.name, dep)
            elif not satisfies(have, dep.specifier):
                notes.append(f"{PREFIX}: note: {parent.name} declares {dep.spec}; kept the installed {dep.name} {have}")
    return list(missing.values()), notes


def constraints_text(installed: dict[str, str], exclude: set[str]) -> str:
    """``name==version`` for every installed distribution but ``exclude``; versions pip could not parse are left out."""
    pk = _packaging()
    lines = []
    for name, version in sorted(installed.items()):
        if name in exclude:
            continue
        if pk is not None:
            try:
                pk[0].Version(version)
            except pk[0].InvalidVersion:
                continue
        lines.append(f"{name}=={version}")
    return "\n".join(lines) + "\n"


def missing_owned(installed: dict[str, str], in_webui: bool) -> list[str]:
    """One line per WebUI-owned package sd-optim uses that is not installed (it is never installed here)."""
    lines = []
    for name, used_by in WEBUI_OWNED.items():
        if used_by is None or name in installed or (name == "gradio" and not in_webui):
            continue
        lines.append(f"{PREFIX}: {name} is not installed; sd-optim never installs it (the WebUI provides it). "
                     f"Without it {used_by} will not work.")
    return lines


def _webui_launch():
    """The WebUI's ``launch`` module when this runs inside a WebUI, else None."""
    try:
        import launch
    except ModuleNotFoundError as e:
        if e.name != "launch":
            raise
        return None
    return launch if callable(getattr(launch, "run_pip", None)) else None


def _shell_arg(arg: str) -> str:
    if re.fullmatch(r"[A-Za-z0-9_.,/:@+=-]+", arg):
        return arg
    if re.search(r'["$`%]', arg):
        raise ValueError(f"{PREFIX}: cannot pass this argument to the WebUI's pip shell safely: {arg!r}")
    return f'"{arg}"'


def run_pip(args: list[str], desc: str) -> None:
    """``pip <args>`` through the WebUI's ``launch.run_pip`` when there is one, else ``sys.executable -m pip``."""
    launch = _webui_launch()
    if launch is not None:
        launch.run_pip(" ".join(_shell_arg(a) for a in args), desc)
        return
    print(f"Installing {desc}")
    command = [sys.executable, "-m", "pip", *args, "--prefer-binary"]
    result = subprocess.run(command, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"Couldn't install {desc}.\nCommand: {subprocess.list2cmdline(command)}\n"
                           f"Error code: {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}")


def install_constrained(needs: list[Need], installed: dict[str, str]) -> None:
    """``pip install`` ``needs`` with every other installed distribution held at its version."""
    fd, path = tempfile.mkstemp(prefix="sd-optim-constraints-", suffix=".txt")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(constraints_text(installed, {canonical(n.name) for n in needs}))
        run_pip(["install", *[n.spec for n in needs], "-c", path],
                f"{PREFIX} requirements: {', '.join(n.spec for n in needs)}")
    finally:
        os.unlink(path)


def change_lines(before: dict[str, str], after: dict[str, str]) -> list[str]:
    lines = []
    for name, version in sorted(after.items()):
        old = before.get(name)
        if old is None:
            lines.append(f"{PREFIX}: installed {name} {version}")
        elif old != version:
            lines.append(f"{PREFIX}: changed {name} {old} -> {version}")
    return lines


def settings_file(args: str, cwd: str) -> str:
    """The WebUI's settings file: ``--ui-settings-file`` in ``COMMANDLINE_ARGS`` (relative to the
    working directory), else ``config.json`` in ``--data-dir`` or the working directory (A1111
    ``modules/cmd_args.py``: ``--ui-settings-file`` defaults to ``os.path.join(data_path,
    'config.json')``). Arguments given to ``launch.py`` itself do not reach this script."""
    import argparse
    import shlex

    try:
        words = shlex.split(args)
    except ValueError:
        words = args.split()
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--ui-settings-file", default="")
    parser.add_argument("--data-dir", default="")
    known, _ = parser.parse_known_args(words)
    if known.ui_settings_file:
        return os.path.join(cwd, known.ui_settings_file)
    return os.path.join(cwd, known.data_dir or "", "config.json")


def driver_needs(settings_path: str) -> list[Need]:
    """The database driver for the storage URL the WebUI's settings name (none without one)."""
    import json

    try:
        with open(settings_path, encoding="utf-8") as f:
            url = json.load(f).get(STORAGE_SETTING, "")
    except (OSError, ValueError, AttributeError):
        return []
    dialect = str(url).split(":", 1)[0].split("+", 1)[0].lower()
    dialect = "postgresql" if dialect == "postgres" else dialect
    return list(DRIVERS.get(dialect, ()))


def main(requirements: tuple[Need, ...] | list[Need] | None = None) -> None:
    if requirements is None:
        settings = settings_file(os.environ.get("COMMANDLINE_ARGS", ""), os.getcwd())
        requirements = (*REQUIREMENTS, *driver_needs(settings))
    before = installed_versions()
    for line in missing_owned(before, _webui_launch() is not None):
        print(line)
    first = [n for n in plan(requirements, before) if n.no_deps]
    second: list[Need] = []
    notes: list[str] = []
    try:
        if first:
            run_pip(["install", "--no-deps", *[n.spec for n in first]],
                    f"{PREFIX} requirements: {', '.join(n.spec for n in first)} (without dependencies)")
        current = installed_versions()
        second = [n for n in plan(requirements, current) if not n.no_deps]
        deps, notes = unmet_dependencies([n for n in requirements if n.no_deps], current)
        second += [d for d in deps if canonical(d.name) not in {canonical(n.name) for n in second}]
        if second:
            install_constrained(second, current)
    except Exception:
        wanted = " ".join(f'"{n.spec}"' for n in (second or first))
        print(f"{PREFIX}: could not install {wanted} into {sys.executable} (pip's message follows); "
              f"sd-optim cannot run until they are installed there.")
        raise
    if not first and not second:
        return
    after = installed_versions()
    for line in change_lines(before, after) + (notes if first else []):
        print(line)
    for need in plan(requirements, after):
        print(f"{PREFIX}: {need.spec} is still not installed")


if __name__ == "__main__":
    main()
