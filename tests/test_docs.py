"""The documentation's code runs: every ```python block of docs/tutorial.md, in order, in one
namespace (as a reader would paste them), and the pages the docs include exist."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", page.read_text(), flags=re.S | re.M)


@pytest.mark.skipif(not (DOCS / "tutorial.md").exists(), reason="docs/ not shipped with this install")
def test_tutorial_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = _blocks(DOCS / "tutorial.md")
    assert len(blocks) >= 4
    monkeypatch.chdir(tmp_path)
    ns: dict[str, object] = {"__name__": "tutorial"}
    for i, code in enumerate(blocks):
        try:
            exec(compile(code, f"tutorial.md block {i + 1}", "exec"), ns)
        except Exception as exc:  # name the block that failed
            raise AssertionError(f"tutorial.md block {i + 1} failed: {exc!r}") from exc


@pytest.mark.skipif(not (DOCS / "tutorial.md").exists(), reason="docs/ not shipped with this install")
def test_included_files_exist() -> None:
    for page in DOCS.rglob("*.md"):
        for inc in re.findall(r"^```\{literalinclude\} (\S+)", page.read_text(), flags=re.M):
            assert (page.parent / inc).is_file(), f"{page.name} includes missing {inc}"
    assert os.path.isfile(DOCS / "examples" / "test_syn_guard_bench.py")
