"""The installable package is `autodrop` alone, and conda users get the same pins as pip users."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [
        r for extra in project["optional-dependencies"].values() for r in extra
    ]
    return dict(r.split("==") for r in requirements)


def test_every_dependency_is_pinned_and_torch_is_the_agreed_build():
    pins = pyproject_pins()
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    assert pins["hydra-core"].startswith("1.3.")


def test_environment_yml_has_the_same_pins():
    listed = re.findall(
        r"^\s+- ([A-Za-z0-9_.-]+)==(\S+)$", (ROOT / "environment.yml").read_text(), re.M
    )
    assert dict(listed) == pyproject_pins()


def test_library_depends_on_torch_only():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert [r.split("==")[0] for r in project["dependencies"]] == ["torch"]
    imports = set()
    for path in (ROOT / "autodrop").rglob("*.py"):
        imports |= set(re.findall(r"^\s*(?:from|import) (\w+)", path.read_text(), re.M))
    assert imports - set(sys.stdlib_module_names) <= {"autodrop", "torch"}


@pytest.mark.slow
def test_wheel_contains_only_the_autodrop_package(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("autodrop-*.whl")
    top_level = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert "autodrop" in top_level
    assert not top_level & {"models", "experiments", "scripts", "tests", "conf"}
