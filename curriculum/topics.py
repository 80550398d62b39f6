"""The one way to use another topic's implementation: ``load_topic("cnn")``."""
from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from .registry import topic


def load_topic(name: str) -> ModuleType:
    """Import a topic's module (``<folder>/<module>.py``) by its module or folder name.

    The module is registered in ``sys.modules`` under its module name, so loading it twice
    returns the same object and its classes stay identical everywhere.
    """
    t = topic(name)
    if t.module in sys.modules:
        return sys.modules[t.module]
    path = t.path / f"{t.module}.py"
    if not path.exists():
        raise FileNotFoundError(f"topic {t.folder} has no implementation yet: {path} is missing")
    spec = importlib.util.spec_from_file_location(t.module, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[t.module] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[t.module]
        raise
    return module
