"""tests/pycache_seed.py: a module compiled where it is installed is read from the seeded
prefix, not compiled again."""

from __future__ import annotations

import os
import py_compile
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pycache_seed import installed_roots, seed


def test_an_installed_module_is_imported_from_its_seeded_copy(tmp_path: Path) -> None:
    root = tmp_path / "site-packages"
    (root / "pkg").mkdir(parents=True)
    source = root / "pkg" / "mod.py"
    source.write_text("VALUE = 7\n")
    (root / "pkg" / "__init__.py").write_text("")
    tag = sys.implementation.cache_tag
    for module in (source, root / "pkg" / "__init__.py"):  # as pip does, into __pycache__
        compiled = module.parent / "__pycache__" / f"{module.stem}.{tag}.pyc"
        py_compile.compile(str(module), cfile=str(compiled), doraise=True)
    prefix = tmp_path / "pycache"

    assert seed([root], prefix) == 2
    seeded = prefix / root.relative_to(root.anchor) / "pkg" / f"mod.{tag}.pyc"
    inode = seeded.stat().st_ino
    environment = {**os.environ, "PYTHONPYCACHEPREFIX": str(prefix), "PYTHONPATH": str(root)}
    environment.pop("PYTHONDONTWRITEBYTECODE", None)
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import importlib.util as u, pkg.mod as m; print(m.VALUE, u.cache_from_source(m.__file__))",  # noqa: E501
        ],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert where == ["7", str(seeded)]
    assert seeded.stat().st_ino == inode  # read as it was: Python wrote no new copy
    assert seed([root], prefix) == 0  # a second seeding leaves the first's files


def test_the_roots_are_those_the_interpreter_imports_from() -> None:
    roots = installed_roots()
    assert Path(os.__file__).parent in roots  # the stdlib
    assert Path(pytest.__file__).parent.parent in roots  # site-packages, as sys.path spells it
