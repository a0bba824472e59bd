"""Fake ``modules`` package of the ldm_patched-family WebUIs: reForge (Panchovix ``main`` 3b56b268,
A1111 1.10 base), Forge Classic (Haoming02 ``classic`` 1f95d717) and Forge ``previous`` (lllyasviel
bfee03d8), both A1111 1.8 based. Installed by ``tests.fakes.ldm_patched.installed``.

The files here are those that differ from A1111 in what the ldm_patched host touches (``shared``,
``sd_models``, ``processing``, ``sd_samplers``, ``sd_schedulers``, ``sd_vae``). The others it uses
(``call_queue``, ``fifo_lock``, ``shared_state``, ``options``, ``devices``, ``script_callbacks``,
``extra_networks``, and ``sd_hijack.EmbeddingsWithFixes``) are unchanged from A1111 in these forks
for that surface, so they resolve to the A1111 fake's modules (tests/fakes/a1111/webui/modules),
appended to this package's ``__path__``.
"""

from pathlib import Path

__path__.append(str(Path(__file__).resolve().parents[3] / "a1111" / "webui" / "modules"))
