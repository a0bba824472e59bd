"""Stand-in for the WebUI's top-level ``launch`` module, as an extension's ``install.py`` sees it.

Reproduces AUTOMATIC1111 stable-diffusion-webui **v1.10.1** (commit
``82a973c04367123ae98bd9abdf80d9eda9b910e2``): ``launch.py:1-24`` re-exports these names from
``modules/launch_utils.py``; Forge ``main`` (``dfdcbab685e57677014f05a3309b48cc87383167``) and reForge
``main`` (``3b56b268ad9158ee8b30900973b6ccda4ec22241``) behave the same for every name here.
Behaviour is reproduced, not code copied:

- ``COMMANDLINE_ARGS`` is split and appended to ``sys.argv`` on import (``modules/paths_internal.py:12-13``),
  then ``args`` is parsed from it (``launch_utils.py:20``; only ``--skip-install`` is modelled);
- ``python`` = ``sys.executable``, ``index_url`` = ``$INDEX_URL`` (``:23,25``), live output only with
  ``WEBUI_LAUNCH_LIVE_OUTPUT=1`` (``:29``);
- ``run`` (``:89-118``): prints ``desc``, runs the command string in a shell, captures stdout/stderr unless
  live, raises ``RuntimeError`` naming the command, the exit code and the output;
- ``is_installed`` (``:121-132``): a distribution of that name, else an importable module; no versions;
- ``run_pip`` (``:139-144``): nothing with ``--skip-install``, else
  ``"{python}" -m pip {command} --prefer-binary[ --index-url {index_url}]`` with ``desc`` "Installing …";
- ``run_extension_installer`` (``:228-241``): ``"{python}" "<dir>/install.py"`` through ``run`` with
  ``PYTHONPATH`` = WebUI root + old value, the WebUI's working directory; stdout printed afterwards,
  a failure reported as ``*** <line>`` on stderr like ``modules/errors.py:38-49`` and swallowed.

The "WebUI root" is this folder.
"""

import argparse
import importlib.metadata
import importlib.util
import os
import shlex
import subprocess
import sys

sys.argv += shlex.split(os.environ.get("COMMANDLINE_ARGS", ""))

_parser = argparse.ArgumentParser()
_parser.add_argument("--skip-install", action="store_true")
args, _ = _parser.parse_known_args()

script_path = os.path.dirname(os.path.abspath(__file__))
python = sys.executable
index_url = os.environ.get("INDEX_URL", "")
default_command_live = os.environ.get("WEBUI_LAUNCH_LIVE_OUTPUT") == "1"


def run(command, desc=None, errdesc=None, custom_env=None, live: bool = default_command_live) -> str:
    if desc is not None:
        print(desc)
    pipes = {} if live else {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    result = subprocess.run(command, check=False, shell=True, env=os.environ if custom_env is None else custom_env,
                            encoding="utf8", errors="ignore", **pipes)
    if result.returncode != 0:
        parts = [f"{errdesc or 'Error running command'}.", f"Command: {command}", f"Error code: {result.returncode}"]
        if result.stdout:
            parts.append(f"stdout: {result.stdout}")
        if result.stderr:
            parts.append(f"stderr: {result.stderr}")
        raise RuntimeError("\n".join(parts))
    return result.stdout or ""


def is_installed(package):
    try:
        importlib.metadata.distribution(package)
        return True
    except importlib.metadata.PackageNotFoundError:
        try:
            return importlib.util.find_spec(package) is not None
        except ModuleNotFoundError:
            return False


def run_pip(command, desc=None, live=default_command_live):
    if args.skip_install:
        return None
    index = f" --index-url {index_url}" if index_url != "" else ""
    return run(f'"{python}" -m pip {command} --prefer-binary{index}', desc=f"Installing {desc}",
               errdesc=f"Couldn't install {desc}", live=live)


def run_extension_installer(extension_dir):
    path = os.path.join(extension_dir, "install.py")
    if not os.path.isfile(path):
        return
    try:
        env = os.environ.copy()
        env["PYTHONPATH"] = f"{script_path}{os.pathsep}{env.get('PYTHONPATH', '')}"
        stdout = run(f'"{python}" "{path}"', errdesc=f"Error running install.py for extension {extension_dir}",
                     custom_env=env).strip()
        if stdout:
            print(stdout)
    except Exception as e:  # noqa: BLE001 - the WebUI reports any installer failure and starts anyway
        for line in str(e).splitlines():
            print("***", line, file=sys.stderr)
