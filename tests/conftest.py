"""Shared fixtures. The Keras flavour is fixed at import (TF_USE_LEGACY_KERAS), so the
README's test command runs this suite twice, once per Keras, in separate processes."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import importlib  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from keras_dnnopt.backend import KERAS_NAME, USING_TF_KERAS, keras  # noqa: E402


def pytest_report_header(config):
    return f"keras_dnnopt running on {KERAS_NAME}"


@pytest.fixture(autouse=True)
def _seed_and_clear():
    keras.backend.clear_session()
    keras.utils.set_random_seed(1234)
    yield


@pytest.fixture
def other_keras():
    """The Keras *not* in use (tf_keras when Keras 3 is active, and vice versa)."""
    return importlib.import_module("keras" if USING_TF_KERAS else "tf_keras")


@pytest.fixture
def rng():
    return np.random.default_rng(0)
