"""The version is written in one place, meson.build's ``project(version: ...)``; meson-python
puts it in the package metadata, where ``optimisers.__version__``, the checkpoints' header
and the docs read it.  These tests check that every reader agrees with that one place."""

import re
import sys
from importlib import metadata
from pathlib import Path

import pytest

import optimisers as opt
from optimisers import _checkpoint

ROOT = Path(__file__).resolve().parent.parent

# PEP 440 as this project uses it: a release N.N.N, optionally a pre-release or .devN
VERSION = re.compile(r"\d+\.\d+\.\d+((a|b|rc)\d+)?(\.dev\d+)?")


def _source_file(name):
    path = ROOT / name
    if not path.is_file():
        pytest.skip(f"{name} is not beside the tests (not run from a checkout)")
    return path.read_text(encoding="utf-8")


def test_version_is_the_metadata_version():
    assert opt.__version__ == metadata.version("optimisers")
    assert VERSION.fullmatch(opt.__version__), opt.__version__


def test_meson_build_is_the_one_source():
    found = re.findall(r"^\s*version\s*:\s*'([^']*)'", _source_file("meson.build"), re.M)
    assert found == [opt.__version__], (
        f"meson.build's project version {found} is not the installed {opt.__version__!r}: "
        "reinstall the package after changing it"
    )


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib is new in Python 3.11")
def test_pyproject_takes_the_version_from_the_build():
    import tomllib

    project = tomllib.loads(_source_file("pyproject.toml"))["project"]
    assert "version" not in project, "pyproject.toml must not write a version of its own"
    assert "version" in project.get("dynamic", [])


def test_checkpoint_writer_names_this_version():
    assert _checkpoint._writer() == f"optimisers {opt.__version__}"


def test_changelog_has_a_section_for_this_version():
    headings = re.findall(r"^## \[([^\]]+)\]", _source_file("CHANGELOG.md"), re.M)
    # a development version's changes are listed under [Unreleased]
    wanted = "Unreleased" if ".dev" in opt.__version__ else opt.__version__
    assert wanted in headings, (
        f"CHANGELOG.md has no '## [{wanted}]' section for version {opt.__version__}"
    )
