"""sd-optim's entry in the WebUI: picks the host (A1111, Forge, reForge / Forge Classic) and
registers the "Optimize Merge" tab, its settings, the /sd-optim/ API routes and the unload hook.
The WebUI puts the extension folder on sys.path only while it loads this file, so it is added
for good here (the run thread imports sd_optim modules later)."""

import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from sd_optim.ui.entry import KeptMergeInfotext, register

__all__ = ["KeptMergeInfotext"]
register()
