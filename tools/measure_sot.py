"""Counts for issue 15 (one source of truth), over src/ and tests/:

lines over 88 and over 150 characters, calls with six or more positional arguments, the share of annotated
parameters (``self``/``cls`` not counted), and tables with two owners: an UPPER_CASE module-level name
assigned in two or more modules of src/, plus the known duplicated tables of the issue, found by value.

    python tools/measure_sot.py
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUANTS = {"q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0", "q3_k_m", "q2_k"}


def python_files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def line_counts(files: list[Path]) -> tuple[int, int, int]:
    lines = [line for f in files for line in f.read_text().splitlines()]
    return len(lines), sum(len(x) > 88 for x in lines), sum(len(x) > 150 for x in lines)


def positional_calls(trees: dict[Path, ast.Module], at_least: int = 6) -> list[str]:
    found = []
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                plain = [a for a in node.args if not isinstance(a, ast.Starred)]
                if len(plain) >= at_least:
                    found.append(
                        f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node.func)} ({len(plain)})"
                    )
    return found


def annotated_share(trees: dict[Path, ast.Module]) -> tuple[int, int]:
    total = annotated = 0
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                params = a.posonlyargs + a.args + a.kwonlyargs + [p for p in (a.vararg, a.kwarg) if p]
                params = [p for p in params if p.arg not in ("self", "cls")]
                total += len(params)
                annotated += sum(p.annotation is not None for p in params)
    return annotated, total


def _module_tables(tree: ast.Module) -> dict[str, ast.expr]:
    tables = {}
    for node in tree.body:
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, ast.AnnAssign)
            else []
        )
        for t in targets:
            if isinstance(t, ast.Name) and t.id.isupper() and len(t.id) > 1 and node.value is not None:
                tables[t.id] = node.value
    return tables


def two_owner_tables(trees: dict[Path, ast.Module]) -> list[str]:
    """An UPPER_CASE table (a dict/list/tuple/set literal) assigned under one name in two or more modules, or
    a literal holding four or more of the quantization names outside of its owner."""
    owners: dict[str, list[str]] = defaultdict(list)
    quant_lists = []
    for path, tree in trees.items():
        rel = str(path.relative_to(ROOT))
        for name, value in _module_tables(tree).items():
            if isinstance(value, (ast.Dict, ast.List, ast.Tuple, ast.Set)):
                owners[name].append(rel)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Dict, ast.List, ast.Tuple, ast.Set)):
                keys = node.keys if isinstance(node, ast.Dict) else node.elts
                names = {k.value for k in keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
                if len(names & QUANTS) >= 4:
                    quant_lists.append(f"{rel}:{node.lineno}")
    found = [f"{name}: {', '.join(paths)}" for name, paths in sorted(owners.items()) if len(paths) > 1]
    if len(quant_lists) > 1:
        found.append(f"quantization names listed in {len(quant_lists)} places: {', '.join(quant_lists)}")
    return found


def main() -> int:
    verbose = "-v" in sys.argv
    for folder in ("src", "tests"):
        files = python_files(folder)
        trees = {f: ast.parse(f.read_text()) for f in files}
        n, over88, over150 = line_counts(files)
        calls = positional_calls(trees)
        annotated, params = annotated_share(trees)
        print(
            f"{folder}: {len(files)} files, {n} lines; > 88 chars: {over88} ({100 * over88 / n:.1f} %), "
            f"> 150 chars: {over150}"
        )
        print(f"{folder}: calls with 6+ positional arguments: {len(calls)}")
        print(
            f"{folder}: annotated parameters: {annotated}/{params} ({100 * annotated / max(params, 1):.1f} %)"
        )
        if verbose:
            print("  " + "\n  ".join(calls))
        if folder == "src":
            tables = two_owner_tables(trees)
            print(f"src: tables with two owners: {len(tables)}")
            for t in tables:
                print(f"  {t}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
