"""The documentation's examples run, against the installed package: the doctests in the docstrings,
and every ```python block of README.md and docs/*.md."""

from __future__ import annotations

import doctest
import importlib
import re
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional

import pytest

MODULES = ["smoothing", "suggestion", "detect", "diagnosis", "nonfinite", "schedules", "plateau", "rules", "quadratic",
           "torch", "torch.scheduler", "torch.guard", "torch.finder", "torch.parallel_sweep", "torch.cuda", "cli"]

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# A block is skipped only when the line right before its fence says why: <!-- skip: reason -->
_SKIP = re.compile(r"^<!--\s*skip:\s*(?P<reason>\S.*?)\s*-->\s*$")
_FENCE = re.compile(r"^```(?P<lang>\S*)\s*$")


class Block(NamedTuple):
    line: int  # 1-based line of the first line of code
    lang: str
    code: str
    skip: Optional[str]


def blocks(path: Path) -> List[Block]:
    """The fenced code blocks of a Markdown file, with the skip reason written above each."""
    out: List[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start = i + 1
        end = start
        while end < len(lines) and lines[end].rstrip() != "```":
            end += 1
        assert end < len(lines), f"{path.name}:{i + 1}: code block never closed"
        prev = _SKIP.match(lines[i - 1]) if i > 0 else None
        out.append(Block(start + 1, m.group("lang"), "\n".join(lines[start:end]) + "\n", prev.group("reason") if prev else None))
        i = end + 1
    return out


def run_page(path: Path) -> Dict[str, Any]:
    """Runs the page's python blocks in order in one namespace (a page's later blocks use what its
    first ones made, as a reader does), each compiled with the file's line numbers so a failure
    points at the Markdown line."""
    namespace: Dict[str, Any] = {"__name__": f"docs.{path.stem}"}
    for block in blocks(path):
        if block.lang != "python" or block.skip:
            continue
        exec(compile("\n" * (block.line - 1) + block.code, str(path), "exec"), namespace)
    return namespace


@pytest.mark.parametrize("path", DOC_FILES, ids=[str(p.relative_to(ROOT)) for p in DOC_FILES])
def test_markdown_examples_run(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the examples write lr_finder.png, curve.csv, ...
    namespace = run_page(path)
    if path.name == "index.md":  # the overview shows what its print(s) prints: it must stay true
        printed = re.search(r"^print\(s\)\s+# (.*)$", path.read_text(encoding="utf-8"), re.M)
        assert printed is not None and str(namespace["s"]) == printed.group(1)


def test_docs_skips_are_rare_and_stated() -> None:
    skipped = [(p.name, b.line) for p in DOC_FILES for b in blocks(p) if b.lang == "python" and b.skip]
    run = [(p.name, b.line) for p in DOC_FILES for b in blocks(p) if b.lang == "python" and not b.skip]
    assert len(skipped) <= 3 < len(run), (skipped, run)  # the three integration fragments only
    for p in DOC_FILES:  # a skip comment always sits right above a python block (none left stray)
        lines = p.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if _SKIP.match(line):
                assert i + 1 < len(lines) and lines[i + 1].startswith("```python"), f"{p.name}:{i + 1}"


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(f"pylrcore.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0

