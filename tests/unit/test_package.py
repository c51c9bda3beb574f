"""The --py-files archive `make package` builds imports every shoprec module on its own."""

import subprocess
import sys
import zipfile

from tests.conftest import PROJECT

IMPORT_ALL = """
import importlib, pkgutil, sys, zipfile
archive = sys.argv[1]
sys.path.insert(0, archive)
import shoprec
assert shoprec.__file__.startswith(archive), shoprec.__file__
names = sorted({n[:-3].replace("/", ".").removesuffix(".__init__") for n in zipfile.ZipFile(archive).namelist()
                if n.endswith(".py")})
for name in names:
    module = importlib.import_module(name)
    assert module.__file__.startswith(archive), (name, module.__file__)
print(len(names))
"""


def test_the_archive_holds_and_imports_every_module(tmp_path):
    done = subprocess.run([sys.executable, str(PROJECT / "scripts" / "package.py"), "--dist", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    archive = tmp_path / "shoprec.zip"
    packaged = {n for n in zipfile.ZipFile(archive).namelist() if n.endswith(".py")}
    in_tree = {str(p.relative_to(PROJECT / "lib")) for p in (PROJECT / "lib" / "shoprec").rglob("*.py")}
    assert packaged == in_tree
    # Zip imports need regular packages: a directory without __init__.py would not import from it.
    imported = subprocess.run([sys.executable, "-c", IMPORT_ALL, str(archive)], capture_output=True, text=True,
                              timeout=300, cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr[-3000:]
    assert int(imported.stdout.strip().splitlines()[-1]) == len({n for n in packaged})
    assert {p.name for p in (tmp_path / "jobs").iterdir()} == {p.name for p in (PROJECT / "jobs").glob("*.py")}
