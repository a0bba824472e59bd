"""Fake of ``modules_forge/forge_version.py``: reForge 3b56b268 ``'1.0.0v2-v1.10.1RC'``, Forge Classic
1f95d717 ``"classic"``, Forge ``previous`` bfee03d8 ``'0.0.17v1.8.0rc'``; the installer sets the profile's."""

version = "1.0.0v2-v1.10.1RC"
