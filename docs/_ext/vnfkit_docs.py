"""Sphinx helpers for vnfkit's docs: ``.. vnfkit-defaults:: MODULE`` renders a middlebox module's
``DEFAULTS`` (its configuration keys) as a table, so the middlebox pages cannot drift from the code."""

from __future__ import annotations

import importlib
import json
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


def setup(app: Any) -> dict[str, Any]:
    app.add_directive("vnfkit-defaults", DefaultsTable)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
