"""The package's version is CMakeLists.txt's project(VERSION), the one place
it is written (pyproject.toml reads it from there)."""

import importlib.metadata
import pathlib
import re

import pytest

import shmring

CMAKELISTS = pathlib.Path(__file__).resolve().parents[2] / "CMakeLists.txt"


def project_version():
    if not CMAKELISTS.is_file():
        pytest.skip(f"no source tree at {CMAKELISTS.parent}")
    match = re.search(r"project\(\s*shmring\s+VERSION\s+([0-9]+\.[0-9]+\.[0-9]+)",
                      CMAKELISTS.read_text())
    assert match, f"no project(shmring VERSION x.y.z) in {CMAKELISTS}"
    return match.group(1)


def test_module_version_is_project_version():
    assert shmring.__version__ == project_version()


def test_distribution_version_is_project_version():
    assert importlib.metadata.version("shmring") == project_version()
