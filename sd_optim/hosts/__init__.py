"""Hosts: the environments sd-optim merges into and renders with (see base.py)."""

from __future__ import annotations

import importlib.util


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def webui_family() -> str:
    """Which WebUI this process is: ``forge`` (Forge with ``backend/``), ``ldm_patched`` (reForge,
    Forge Classic, Forge before its rewrite) or ``a1111``. Detected by structure, not by version
    strings: ``backend``/``ldm_patched`` are namespace packages and extension roots sit on
    ``sys.path``, so a submodule only these WebUIs have is looked up (docs/hosts/forge.md §3)."""
    if _has_module("backend.memory_management") and _has_module("modules_forge"):
        return "forge"
    if _has_module("ldm_patched.modules.model_management"):
        return "ldm_patched"
    return "a1111"


def webui_host():
    """The Host for the WebUI this process runs in."""
    family = webui_family()
    if family == "forge":
        from .forge import ForgeHost

        return ForgeHost()
    if family == "ldm_patched":
        from .ldm_patched import LdmPatchedHost

        return LdmPatchedHost()
    from .a1111 import A1111Host

    return A1111Host()
