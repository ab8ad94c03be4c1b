"""Griffe extension used by the docs' API reference (mkdocs.yml): pylrcore's docstrings are written
for ``help()`` and doctest — reST roles (:data:`X`), ``literals`` and bare ``>>>`` blocks — while
mkdocstrings renders Markdown. Rewriting them here, at load time, keeps one docstring for both
readers (a bare doctest would otherwise render as a paragraph, and its output lines such as
``[0.001, 0.01]`` would be read as Markdown links)."""

from __future__ import annotations

import re
from typing import Any, List

import griffe

_ROLE = re.compile(r":(?:py:)?(?:data|mod|class|func|meth|attr|obj|exc|const):`~?([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")


def to_markdown(text: str) -> str:
    text = _LITERAL.sub(r"`\1`", _ROLE.sub(r"`\1`", text))
    out: List[str] = []
    fence = None  # the indentation of the open ```pycon fence
    for line in text.split("\n"):
        stripped = line.lstrip()
        if fence is None and stripped.startswith(">>>"):
            fence = line[: len(line) - len(stripped)]
            out.append(fence + "```pycon")
        elif fence is not None and not stripped:
            out.append(fence + "```")
            fence = None
        out.append(line)
    if fence is not None:
        out.append(fence + "```")
    return "\n".join(out)


class RstToMarkdown(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)
