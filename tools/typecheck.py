"""Run mypy over the installed ``synthct`` namespace, with the [tool.mypy] settings of pyproject.toml.

setuptools maps the stage folders into ``synthct`` (package-dir: algorithm/ → synthct.algorithm, …); the editable
install resolves them with an import hook that mypy cannot follow. This script mirrors the installed layout as a
link tree under build/mypy/tree (rebuilt on each run, from [tool.setuptools.package-dir]), runs mypy in it and
prints the paths as they are in the repository (synthct/algorithm/qa.py → algorithm/qa.py).

Usage: python tools/typecheck.py [mypy arguments]; without module arguments mypy checks [tool.mypy] packages.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "mypy"


def package_dirs(pyproject: Path) -> dict[str, str]:
    """The package → folder mapping of [tool.setuptools.package-dir], folders relative to the repository."""
    with pyproject.open("rb") as f:
        mapping: dict[str, str] = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
    return mapping


def build_tree(root: Path, mapping: dict[str, str], tree: Path) -> dict[str, str]:
    """Link each mapped folder into ``tree`` at its package path; return tree-relative → repository path prefixes.

    A package with a mapped subpackage becomes a real folder holding links to its own entries, so that the
    subpackage's link can sit next to them; every other package is one link to its folder.
    """
    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir(parents=True)
    prefixes: dict[str, str] = {}
    for package in sorted(mapping, key=lambda name: name.count(".")):
        source = root / mapping[package]
        target = tree / package.replace(".", "/")
        children = {other.split(".")[package.count(".") + 1] for other in mapping if other.startswith(package + ".")}
        if children:
            target.mkdir(parents=True, exist_ok=True)
            for entry in source.iterdir():
                if entry.name not in children and entry.name != "__pycache__":
                    (target / entry.name).symlink_to(entry)
        else:
            target.symlink_to(source, target_is_directory=True)
        prefixes[package.replace(".", "/") + "/"] = mapping[package].rstrip("/") + "/"
    return prefixes


def to_repository_path(line: str, prefixes: dict[str, str]) -> str:
    """Rewrite a mypy output line that starts with a tree path to the repository path (longest prefix wins)."""
    for tree_prefix in sorted(prefixes, key=len, reverse=True):
        if line.startswith(tree_prefix):
            return prefixes[tree_prefix] + line[len(tree_prefix):]
    return line


def main(argv: list[str]) -> int:
    """Build the tree, run mypy in it and return mypy's exit status."""
    pyproject = ROOT / "pyproject.toml"
    tree = BUILD / "tree"
    prefixes = build_tree(ROOT, package_dirs(pyproject), tree)
    command = [sys.executable, "-m", "mypy", "--config-file", str(pyproject), "--cache-dir", str(BUILD / "cache"),
               *argv]
    process = subprocess.run(command, cwd=tree, capture_output=True, text=True, check=False)
    for line in process.stdout.splitlines():
        print(to_repository_path(line, prefixes))
    sys.stderr.write(process.stderr)
    return process.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
