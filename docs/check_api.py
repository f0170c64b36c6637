"""Fail unless every public class and function of vnfkit appears in the built API reference.

Usage: python docs/check_api.py BUILD_DIR   (after `sphinx-build -b html docs BUILD_DIR`)

"Public" means: every importable module under vnfkit whose name has no leading underscore (except
the CLI entry points), and in each, every class and function named in its ``__all__``; each is
looked for where the docs put it (its defining module, or for engine objects the most specific
public module that exports it).
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

from sphinx.util.inventory import InventoryFile

sys.path.insert(0, str(Path(__file__).resolve().parent / "_ext"))
from vnfkit_docs import api_homes  # noqa: E402  (where the docs put each object)


def main(build: str) -> int:
    with open(Path(build) / "objects.inv", "rb") as f:
        inv = InventoryFile.load(f, "", lambda a, b: b)
    documented: set[str] = set()
    for role, entries in inv.items():
        if role.startswith("py:"):
            documented.update(entries)
    missing: list[str] = []
    for name, attrs in api_homes().items():
        if name not in documented:
            missing.append(f"module {name}")
            continue
        mod = importlib.import_module(name)
        for attr in attrs:
            obj = getattr(mod, attr)
            if (inspect.isclass(obj) or inspect.isroutine(obj)) and f"{name}.{attr}" not in documented:
                missing.append(f"{name}.{attr}")
    if missing:
        print("not in the API reference:\n  " + "\n  ".join(missing))
        return 1
    print(f"API reference covers every public class and function ({len(documented)} objects)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
