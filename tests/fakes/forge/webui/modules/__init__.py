"""Fake ``modules`` package of lllyasviel/stable-diffusion-webui-forge ``main`` (commit dfdcbab6,
version '2.0.1v1.10.1'), for tests.

Only the surface sd-optim's Forge host touches, reproducing the behaviour described in
docs/hosts/forge.md; no WebUI code is copied. Installed by ``tests.fakes.forge.installed``.

The files here are those whose behaviour differs from A1111 1.10 for that surface. The others
(``fifo_lock``, ``script_callbacks``, ``ui_settings``, ``scripts`` with its Forge switch) are
unchanged from A1111 in Forge, so they
resolve to the A1111 fake's modules (tests/fakes/a1111/webui/modules), appended to this
package's ``__path__``, as the ldm_patched fake does.
"""

from pathlib import Path

__path__.append(str(Path(__file__).resolve().parents[3] / "a1111" / "webui" / "modules"))
