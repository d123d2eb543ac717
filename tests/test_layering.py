"""The layering the README claims: the library (``models``, ``data``, ``losses``, ``metrics``, ``utils``) and the
packages built on it alone (``features``, ``episodic``, ``search``, ``viz``, ``serve``), every module of them, import
nothing of the application (``train``, ``tasks``, ``cli``). Each case runs in a fresh interpreter, so
modules that other tests imported do not hide an import."""

import json
import os
import subprocess
import sys

import pytest

LIBRARY = (
    "egovlp.models", "egovlp.data", "egovlp.losses", "egovlp.metrics", "egovlp.utils", "egovlp.features",
    "egovlp.episodic", "egovlp.search", "egovlp.viz", "egovlp.serve",
)  # fmt: skip
APPLICATION = ("egovlp.train", "egovlp.tasks", "egovlp.cli")

# Imports the packages and all their submodules, then prints {module imported: application modules it pulled in}.
PROBE = """
import importlib, json, pkgutil, sys
app = tuple(sys.argv[1].split(","))
def application():
    return {m for m in sys.modules if m in app or m.startswith(tuple(a + "." for a in app))}
found = {}
def probe(module):
    before = application()
    imported = importlib.import_module(module)
    if application() - before:
        found[module] = sorted(application() - before)
    return imported
for name in sys.argv[2:]:
    package = probe(name)
    for info in pkgutil.walk_packages(getattr(package, "__path__", []), name + "."):
        probe(info.name)
print(json.dumps(found))
"""


def application_imports(*modules: str) -> dict[str, list[str]]:
    """``{module: application modules its import loaded}`` for ``modules`` and their submodules (fresh process)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(APPLICATION), *modules],
        capture_output=True, text=True, env=env, timeout=240, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


# one fresh interpreter per core package, and one for everything (an application import anywhere is named there)
@pytest.mark.parametrize("package", [*LIBRARY[:4], ",".join(LIBRARY)], ids=[*LIBRARY[:4], "all"])
def test_library_does_not_import_the_application(package):
    found = application_imports(*package.split(","))
    assert found == {}, "library modules that import the application: " + "; ".join(
        f"{m} -> {', '.join(a)}" for m, a in found.items()
    )


def test_the_probe_sees_an_application_import():
    """Control: the same probe reports what an application module pulls in (so an empty answer means something)."""
    found = application_imports("egovlp.train.loop")
    assert "egovlp.train.loop" in found["egovlp.train.loop"]
