"""Fail unless every public class and function of vnfkit appears in the built API reference.

Usage: python docs/check_api.py BUILD_DIR   (after `sphinx-build -b html docs BUILD_DIR`)

"Public" means: every importable module under vnfkit whose name has no leading underscore (except
the CLI entry points), and in each, every class and function named in its ``__all__``.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
from pathlib import Path

from sphinx.util.inventory import InventoryFile

import vnfkit

NOT_API = {"vnfkit.cli", "vnfkit.__main__"}


def public_modules() -> list[str]:
    mods = ["vnfkit"]
    for info in pkgutil.walk_packages(vnfkit.__path__, "vnfkit."):
        if any(part.startswith("_") for part in info.name.split(".")) or info.name in NOT_API:
            continue
        mods.append(info.name)
    return mods


def main(build: str) -> int:
    with open(Path(build) / "objects.inv", "rb") as f:
        inv = InventoryFile.load(f, "", lambda a, b: b)
    documented: set[str] = set()
    for role, entries in inv.items():
        if role.startswith("py:"):
            documented.update(entries)
    missing: list[str] = []
    for name in public_modules():
        if name == "vnfkit":
            continue  # re-exports only: each object is documented in its own module
        if name not in documented:
            missing.append(f"module {name}")
            continue
        mod = importlib.import_module(name)
        for attr in getattr(mod, "__all__", []):
            obj = getattr(mod, attr)
            if (inspect.isclass(obj) or callable(obj)) and f"{name}.{attr}" not in documented:
                missing.append(f"{name}.{attr}")
    if missing:
        print("not in the API reference:\n  " + "\n  ".join(missing))
        return 1
    print(f"API reference covers every public class and function ({len(documented)} objects)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
