"""Fake ``modules`` package of AUTOMATIC1111/stable-diffusion-webui v1.10.1 (commit 82a973c0), for tests.

Only the surface sd-optim's A1111 host touches, reproducing the behaviour described in
docs/hosts/a1111.md; no WebUI code is copied. Installed by ``tests.fakes.a1111.installed``.
"""
