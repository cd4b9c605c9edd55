"""Shared test set-up: quiet TensorFlow, one cache of generated data per session."""

import os
import sys

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")

# The built-in data set is generated once per test session, not once per test.
_DATA_DIR = os.environ.setdefault(
    "TFDS_DATA_DIR", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                  ".pytest_data"))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def data_dir():
    return _DATA_DIR


@pytest.fixture
def run_cli(tmp_path):
    """Run ``python -m trainer ...`` in a subprocess from ``tmp_path``; returns CompletedProcess."""
    import subprocess

    def run(*args, timeout=600, cwd=None, env=None):
        # env values of None remove a variable (e.g. WANDB_MODE, to run the default logger)
        environment = {k: v for k, v in {**os.environ, "PYTHONPATH": REPO, **(env or {})}.items()
                       if v is not None}
        return subprocess.run([sys.executable, "-m", "trainer", *args], cwd=cwd or tmp_path,
                              capture_output=True, text=True, timeout=timeout, env=environment)

    return run
