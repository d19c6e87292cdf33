"""Guards: the public names, and every module importing cleanly."""

from __future__ import annotations

import importlib
import importlib.resources
import pkgutil
import subprocess
import sys

import aiosched


def test_all_is_sorted_and_complete() -> None:
    assert aiosched.__all__ == sorted(aiosched.__all__)
    for name in aiosched.__all__:
        assert hasattr(aiosched, name), name
    public = {n for n in vars(aiosched) if not n.startswith("_") and n[0].isupper()}
    assert public <= set(aiosched.__all__), public - set(aiosched.__all__)


def test_every_module_imports_without_warnings() -> None:
    names = [m.name for m in pkgutil.walk_packages(aiosched.__path__, "aiosched.")]
    assert "aiosched.triggers" in names
    code = "import importlib, sys\nfor n in sys.argv[1:]: importlib.import_module(n)"
    done = subprocess.run([sys.executable, "-W", "error", "-c", code, *names], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for name in names:
        importlib.import_module(name)


def test_only_triggers_imports_apscheduler() -> None:
    root = aiosched.__path__[0]
    offenders = []
    for module in pkgutil.walk_packages(aiosched.__path__, "aiosched."):
        if module.name == "aiosched.triggers" or module.ispkg:
            continue
        path = f"{root}/{module.name.removeprefix('aiosched.').replace('.', '/')}.py"
        with open(path, encoding="utf-8") as source:
            if "apscheduler" in source.read():
                offenders.append(module.name)
    assert offenders == []


def test_py_typed_is_shipped() -> None:
    assert importlib.resources.files("aiosched").joinpath("py.typed").is_file()
