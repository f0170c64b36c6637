"""Sphinx helpers for vnfkit's docs.

- ``.. vnfkit-defaults:: MODULE`` renders a middlebox module's ``DEFAULTS`` (its configuration
  keys) as a table, so the middlebox pages cannot drift from the code.
- At start-up, one API page per public module is written to ``docs/api/`` (``api.md`` lists them
  with a glob), so a new module is in the reference without anyone remembering to add it.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.parsers.rst import Directive


def _cell(text: str, literal: bool = True) -> nodes.entry:
    entry = nodes.entry()
    para = nodes.paragraph()
    para += nodes.literal(text=text) if literal else nodes.Text(text)
    entry += para
    return entry


class DefaultsTable(Directive):
    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        module = importlib.import_module(self.arguments[0])
        defaults: dict[str, Any] | None = getattr(module, "DEFAULTS", None)
        if not isinstance(defaults, dict) or not defaults:
            raise self.error(f"{self.arguments[0]} has no DEFAULTS dict")
        table = nodes.table()
        group = nodes.tgroup(cols=2)
        table += group
        for width in (30, 70):
            group += nodes.colspec(colwidth=width)
        head = nodes.thead()
        row = nodes.row()
        row += _cell("key", literal=False)
        row += _cell("default (JSON)", literal=False)
        head += row
        group += head
        body = nodes.tbody()
        for key, value in defaults.items():
            row = nodes.row()
            row += _cell(key)
            row += _cell(json.dumps(value, default=str))
            body += row
        group += body
        return [table]


#: modules that are entry points, not API
NOT_API = {"vnfkit.cli", "vnfkit.__main__", "vnfkit.experiments.cli"}


def public_modules() -> list[str]:
    """Every importable vnfkit module without a leading underscore in its name, but entry points."""
    import vnfkit

    mods = []
    for info in pkgutil.walk_packages(vnfkit.__path__, "vnfkit."):
        if any(part.startswith("_") for part in info.name.split(".")) or info.name in NOT_API:
            continue
        mods.append(info.name)
    return sorted(mods)


def _exports(mod: Any) -> list[str]:
    names = getattr(mod, "__all__", None)
    if names is None:
        names = [n for n in vars(mod) if not n.startswith("_")
                 and getattr(getattr(mod, n), "__module__", None) == mod.__name__]
    return list(names)


def api_homes() -> dict[str, list[str]]:
    """Public module -> the names documented on its page. Each object is documented once: in the
    public module that defines it, or (for objects of the compiled engine and other private
    modules) in the most specific public module that exports it."""
    mods = public_modules()
    public = set(mods)
    homes: dict[str, list[str]] = {m: [] for m in mods}
    seen: dict[object, str] = {}
    # most specific first, the top-level package last: vnfkit.packets.PacketBatch, not vnfkit.PacketBatch
    for name in sorted(mods, key=lambda m: (m == "vnfkit", -m.count("."), m)):
        mod = importlib.import_module(name)
        for attr in _exports(mod):
            obj = getattr(mod, attr)
            where = getattr(obj, "__module__", None) if (callable(obj) or isinstance(obj, type)) else None
            if where in public and where != name and attr in _exports(importlib.import_module(where)):
                continue  # documented on its defining module's page
            key: object = id(obj) if where is not None else (name, attr)  # data: one entry per module
            if key in seen:
                continue  # already documented under another public module
            seen[key] = name
            homes[name].append(attr)
    return homes


def write_api_pages(app: Any) -> None:
    out = Path(app.srcdir) / "api"
    out.mkdir(exist_ok=True)
    homes = api_homes()
    wanted = {f"{m}.md" for m in homes}
    for old in out.glob("*.md"):
        if old.name not in wanted:
            old.unlink()
    for mod, names in homes.items():
        members = f":members: {', '.join(names)}" if names else ":no-members:"
        text = f"# `{mod}`\n\n```{{eval-rst}}\n.. automodule:: {mod}\n   {members}\n```\n"
        page = out / f"{mod}.md"
        if not page.exists() or page.read_text() != text:
            page.write_text(text)


def setup(app: Any) -> dict[str, Any]:
    app.add_directive("vnfkit-defaults", DefaultsTable)
    app.connect("builder-inited", write_api_pages)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
