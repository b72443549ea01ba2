"""Fixtures of the convert tests: tiny checkpoints built once per session, tarred the SageMaker way."""

from __future__ import annotations

import os
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before anything imports huggingface_hub

import pytest

from tests.convert.fixtures import build_causal_lm, build_text_classifier, sagemaker_tarball


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """{"classifier"|"generator": {"dir": checkpoint directory, "tarball": model.tar.gz}}."""
    root = tmp_path_factory.mktemp("tiny-models")
    models = {}
    for name, builder in (("classifier", build_text_classifier), ("generator", build_causal_lm)):
        directory = builder(root / name)
        models[name] = {"dir": directory, "tarball": sagemaker_tarball(directory, root / f"{name}.tar.gz")}
    return models


@pytest.fixture
def checkpoint_copy(tiny_models, tmp_path):
    """A writable copy of the classifier checkpoint, to break in a test."""
    return shutil.copytree(tiny_models["classifier"]["dir"], tmp_path / "checkpoint")
