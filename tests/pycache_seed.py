"""Seed the suite's bytecode cache with the modules already compiled where they are installed.

`make test` runs Python with `PYTHONPYCACHEPREFIX` set to the venv's `pycache`
(tests/conftest.py `BYTECODE_CACHE`), and with a prefix set Python reads compiled modules only
from under it: the `__pycache__` folders pip wrote into site-packages at install, and those of
the interpreter's standard library, go unread, and a fresh venv (every CI run) compiles those
modules again. This links each of them into the prefix where Python looks for it (a copy
where a link cannot be made). A linked file is valid as long as its source is unchanged (the
source's mtime and size are in its header); Python replaces a stale one by a rename, which
leaves the installed file as it was. The Makefile runs this once per venv, after pip.

    .venv/bin/python -m tests.pycache_seed .venv/pycache
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Final

TAG_SUFFIX: Final = f".{sys.implementation.cache_tag}.pyc"
"""Only the plain compiled form (`python -O` and pytest's rewrites are named otherwise)."""


def installed_roots() -> list[Path]:
    """Where pip and the interpreter keep compiled modules: site-packages and the stdlib,
    spelled as the import system spells them (`sys.path`'s entries, symlinks unresolved)."""
    names = ("purelib", "platlib", "stdlib", "platstdlib")
    return sorted({Path(sysconfig.get_path(name)) for name in names})


def seed(roots: list[Path], prefix: Path) -> int:
    """Link every `ROOT/**/__pycache__/NAME.TAG.pyc` to `PREFIX/ROOT/**/NAME.TAG.pyc` (the
    layout of `importlib.util.cache_from_source` under a prefix); returns how many were new."""
    linked = 0
    for cache_dir in _cache_dirs(roots):
        target_dir = prefix / cache_dir.parent.relative_to(cache_dir.anchor)
        for compiled in cache_dir.glob(f"*{TAG_SUFFIX}"):
            target = target_dir / compiled.name
            if target.exists():
                continue
            target_dir.mkdir(parents=True, exist_ok=True)
            try:
                os.link(compiled, target)
            except OSError:  # another file system
                shutil.copyfile(compiled, target)
            linked += 1
    return linked


UNIMPORTED: Final = frozenset({"site-packages", "test", "tests"})
"""Folders below a root that the suite imports nothing from: the base interpreter's own
site-packages (not the venv's), the stdlib's test suite and the packages' tests: here the
seed links 6,300 files in 0.8 s, not 19,400 in 7.5 s."""


def _cache_dirs(roots: list[Path]) -> Iterator[Path]:
    for root in roots:
        for folder, subfolders, _files in os.walk(root):
            subfolders[:] = [name for name in subfolders if name not in UNIMPORTED]
            if Path(folder).name == "__pycache__":
                yield Path(folder)


def main(argv: list[str]) -> None:
    linked = seed(installed_roots(), Path(argv[0]).absolute())
    print(f"{linked} compiled modules seeded into {argv[0]}")


if __name__ == "__main__":
    main(sys.argv[1:])
