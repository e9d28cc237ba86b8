"""The command line is a thin shell: it imports only driftrec's public surface (as simonw/llm's cli.py
imports only from ``llm``), and every public name resolves."""

from __future__ import annotations

import ast
from pathlib import Path

import driftrec

CLI = Path(driftrec.__file__).parent / "cli.py"


def test_cli_imports_only_from_the_package_root() -> None:
    deep = [
        node.module
        for node in ast.walk(ast.parse(CLI.read_text()))
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("driftrec.")
    ]
    assert deep == []


def test_every_public_name_resolves() -> None:
    for name in driftrec.__all__:
        assert getattr(driftrec, name) is not None, name
    assert "Recommender" in dir(driftrec)
