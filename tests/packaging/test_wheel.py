"""``python -m build`` makes a wheel and an sdist that hold every file of the package
(SQL, static files, types); the wheel, installed in a clean virtual environment, runs
``errands --help`` and ``errands demo`` with a job through it."""

from __future__ import annotations

import email
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import errands
from tests.helpers import ROOT
from tests.ui.test_demo import check_signing_in, run_primes, start_demo, stop_with_ctrl_c

PACKAGE = ROOT / "src" / "errands"


def package_files() -> set[str]:
    """Every file of the package in the source tree, as ``errands/...``."""
    return {
        path.relative_to(PACKAGE.parent).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and "egg-info" not in str(path)
    }


def run(*command: str | Path, cwd: Path = ROOT, timeout: float = 300) -> str:
    """Run a command to its end; its output (it must succeed)."""
    ran = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert ran.returncode == 0, f"{command}:\n{ran.stdout}\n{ran.stderr}"
    return ran.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist, and the wheel built from it (python -m build; this environment's
    setuptools, so nothing is downloaded)."""
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ".")
    return out


def only(folder: Path, pattern: str) -> Path:
    """The one file of ``folder`` matching ``pattern``."""
    [found] = folder.glob(pattern)
    return found


@pytest.fixture(scope="module")
def venv_python(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with only the wheel (and its dependencies) installed."""
    venv = tmp_path_factory.mktemp("venv")
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    wheel = only(dist, "errands-*.whl")
    run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", wheel)
    return python


def test_the_wheel_holds_every_file_of_the_package(dist: Path) -> None:
    with zipfile.ZipFile(only(dist, "errands-*.whl")) as wheel:
        packaged = {name for name in wheel.namelist() if name.startswith("errands/")}
    expected = package_files()
    assert {name for name in expected if name.endswith((".sql", ".js", ".d.ts", ".css"))}
    assert packaged == expected


def test_the_sdist_holds_the_package_the_changelog_and_the_examples(dist: Path) -> None:
    sdist = only(dist, "errands-*.tar.gz")
    top = sdist.name.removesuffix(".tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.removeprefix(f"{top}/") for name in archive.getnames()}
    assert {f"src/{name}" for name in package_files()} <= names
    assert {"pyproject.toml", "README.md", "CHANGELOG.md"} <= names
    assert {"examples/fastapi/app.py", "examples/react/app.js"} <= names


def test_the_metadata_says_what_an_index_shows(dist: Path) -> None:
    with zipfile.ZipFile(only(dist, "errands-*.whl")) as wheel:
        [name] = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = email.message_from_bytes(wheel.read(name))
    assert metadata["Version"] == errands.__version__
    assert {"django", "otel"} <= set(metadata.get_all("Provides-Extra") or [])
    classifiers = metadata.get_all("Classifier") or []
    assert "Framework :: Django" in classifiers
    assert "Typing :: Typed" in classifiers
    assert metadata["License-Expression"] == "MIT"
    assert "Local-first background jobs" in (metadata.get_payload() or "")  # the README


@pytest.mark.timeout(300)  # its setup installs the wheel's dependencies in a fresh venv
def test_the_installed_wheel_runs_its_cli_and_the_demo(
    venv_python: Path, database_url: str, tmp_path: Path
) -> None:
    where = run(venv_python, "-c", "import errands; print(errands.__file__)", cwd=tmp_path)
    assert where.startswith(str(venv_python.parent.parent)), where  # not the source tree
    assert "worker" in run(venv_python, "-m", "errands", "--help", cwd=tmp_path)
    assert errands.__version__ in run(venv_python, "-m", "errands", "--version", cwd=tmp_path)
    demo, printed = start_demo(
        "--database-url", database_url, "--data-dir", str(tmp_path), python=str(venv_python)
    )
    try:
        check_signing_in(printed)
        assert run_primes(printed.page)["result"]["primes"] == 168
        stop_with_ctrl_c(demo)
    finally:
        demo.close()
