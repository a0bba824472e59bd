"""Fake of ``modules/scripts.py`` + ``modules/script_loading.py`` (A1111 v1.10.1, 82a973c0): what
loading an extension's ``scripts/*.py`` does.

Reproduced: ``Script`` / ``AlwaysVisible``; ``load_scripts`` per script file: the extension root is
prepended to a *new* ``sys.path`` list while the file loads and the saved list object is put back
afterwards (so a path a script inserts during its load is gone again); with ``KEEP_ROOT_ON_PATH``
(set by the Forge and ldm_patched fakes: Forge ``modules/scripts.py:499-501``, reForge ``:508-509``,
Classic ``:511-512``, docs/hosts/forge.md §5) the root is prepended for good instead; the file is executed with
``spec_from_file_location(basename, path)`` + ``exec_module``; every class in the module's
namespace that subclasses ``Script`` (imported ones included) is registered; an exception is
reported and loading goes on. ``basedir()`` is the loading extension's root.
"""

import importlib.util
import inspect
import os
import sys
import traceback

AlwaysVisible = object()


class Script:
    name = None
    filename = None
    alwayson = False
    infotext_fields = None

    def title(self):
        raise NotImplementedError()

    def ui(self, is_img2img):
        pass

    def show(self, is_img2img):
        return True

    def process(self, p, *args):
        pass


KEEP_ROOT_ON_PATH = False
scripts_data: list = []  # (script class, path, basedir, module)
load_errors: list = []
current_basedir = ""


def basedir():
    return current_basedir


def load_module(path):
    spec = importlib.util.spec_from_file_location(os.path.basename(path), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_scripts(extension_root):
    """Load ``<extension_root>/scripts/*.py`` the way ``load_scripts`` loads an extension."""
    global current_basedir
    folder = os.path.join(extension_root, "scripts")
    for filename in sorted(f for f in os.listdir(folder) if f.endswith(".py")):
        path = os.path.join(folder, filename)
        syspath = sys.path
        try:
            if KEEP_ROOT_ON_PATH:
                if extension_root not in sys.path:
                    sys.path.insert(0, extension_root)
                syspath = sys.path
            else:
                sys.path = [extension_root, *sys.path]
            current_basedir = extension_root
            module = load_module(path)
            for cls in module.__dict__.values():
                if inspect.isclass(cls) and issubclass(cls, Script):
                    scripts_data.append((cls, path, extension_root, module))
        except Exception:  # noqa: BLE001 - A1111 reports and goes on
            load_errors.append(traceback.format_exc())
        finally:
            sys.path = syspath
            current_basedir = ""
