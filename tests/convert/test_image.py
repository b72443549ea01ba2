"""The processing image (convert/image/) agrees with pyproject.toml and with the pipeline (no docker build here)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from mlflow_sync.convert.pipeline import ENTRYPOINT, JOB_WORKDIR

ROOT = Path(__file__).resolve().parents[2]
IMAGE = ROOT / "convert" / "image"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _pins() -> dict[str, str]:
    pins = {}
    for line in (IMAGE / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([0-9][0-9A-Za-z.]*)", line)
        assert match, f"requirements.txt: {line!r} is not an exact NAME==VERSION pin"
        name = canonicalize_name(match[1])
        assert name not in pins, f"requirements.txt pins {name} twice"
        pins[name] = match[2]
    return pins


def _runtime_requirements() -> list[Requirement]:
    """What `mlflow-sync convert hf-tarball` needs: the base dependencies and the [convert] extra."""
    project = PYPROJECT["project"]
    return [Requirement(text) for text in (*project["dependencies"], *project["optional-dependencies"]["convert"])]


@pytest.mark.parametrize("requirement", _runtime_requirements(), ids=str)
def test_every_runtime_requirement_is_pinned_within_pyprojects_tested_range(requirement):
    pins = _pins()
    name = canonicalize_name(requirement.name)
    assert name in pins, f"{requirement} (pyproject.toml) has no pin in convert/image/requirements.txt"
    assert requirement.specifier.contains(pins[name], prereleases=True), (
        f"requirements.txt pins {name}=={pins[name]}, outside pyproject.toml's {requirement}")


def test_the_dockerfile_runs_the_converter_on_a_supported_python_with_the_pins():
    dockerfile = (IMAGE / "Dockerfile").read_text(encoding="utf-8")
    python = re.search(r"^FROM python:(\d+\.\d+)", dockerfile, re.M)
    assert python and SpecifierSet(PYPROJECT["project"]["requires-python"]).contains(python[1])
    entrypoint = re.search(r"^ENTRYPOINT (.+)$", dockerfile, re.M)
    assert entrypoint and json.loads(entrypoint[1]) == ENTRYPOINT  # the pipeline step overrides it with the same
    workdir = re.search(r"^WORKDIR (\S+)$", dockerfile, re.M)
    assert workdir and JOB_WORKDIR.startswith(workdir[1] + "/")
    assert "pip install -r /tmp/requirements.txt" in dockerfile and "pip install --no-deps /src" in dockerfile
    assert "HF_HUB_OFFLINE=1" in dockerfile


def test_the_image_holds_every_package_folder_of_the_project():
    dockerfile = (IMAGE / "Dockerfile").read_text(encoding="utf-8")
    ignore = (IMAGE / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    for folder in sorted(set(PYPROJECT["tool"]["setuptools"]["package-dir"].values())):
        assert (ROOT / folder).is_dir()
        assert f"COPY {folder} /src/{folder}" in dockerfile, f"the Dockerfile does not copy {folder}/"
        assert f"!{folder}/" in ignore, f"Dockerfile.dockerignore excludes {folder}/"
