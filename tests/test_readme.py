"""The README's Python quick start runs as written (so the README stays true)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _python_blocks() -> list[str]:
    if not README.exists():
        pytest.skip("README.md not found next to tests/ (installed without the source tree)")
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_quick_start_blocks_run_in_order():
    blocks = _python_blocks()
    assert len(blocks) >= 2
    ns: dict[str, object] = {"__name__": "readme"}
    for code in blocks:
        exec(compile(code, str(README), "exec"), ns)  # noqa: S102 - our own README
    # the blocks really did their work
    assert len(ns["flows"]) == 1000  # type: ignore[arg-type]
    assert len(ns["log_chunk"]) > 0  # type: ignore[arg-type]
    result = ns["result"]
    assert result.packets == 20_000 and result.dropped > 0  # type: ignore[attr-defined]
