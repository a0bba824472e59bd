"""Fake ``modules`` package of lllyasviel/stable-diffusion-webui-forge ``main`` (commit dfdcbab6,
version '2.0.1v1.10.1'), for tests.

Only the surface sd-optim's Forge host touches, reproducing the behaviour described in
docs/hosts/forge.md; no WebUI code is copied. Installed by ``tests.fakes.forge.installed``.
"""
