"""Distribution parity: every loop, 2 MirroredStrategy replicas == one device on the global batch.

One subprocess for all loops (logical CPU devices must be set before TensorFlow starts).
A weight change after one SGD step (lr 1, no momentum) is the gradient, so equal weights
mean equal gradients.
"""

import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
LOOPS = ["supervised", "pair", "simclr", "supcon", "bct", "distill", "gan"]


# Whole training jobs or subprocesses: the end-to-end tier.
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def verdicts():
    env = {**os.environ, "PYTHONPATH": REPO, "KERAS_BACKEND": "tensorflow",
           "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, os.path.join(HERE, "loops_parity_worker.py")],
                          capture_output=True, text=True, timeout=500, env=env, cwd=REPO)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, done.stderr[-3000:]
    return {line["loop"]: line for line in lines}


@pytest.mark.parametrize("loop", LOOPS)
def test_two_replicas_match_one_device(verdicts, loop):
    verdict = verdicts[loop]
    assert "error" not in verdict, verdict.get("error")
    assert verdict["loss_2"] == pytest.approx(verdict["loss_1"], rel=1e-5, abs=1e-6)
    assert verdict["max_update"] > 0  # the step did move the weights
    assert verdict["max_weight_error"] <= 1e-5 * max(1.0, verdict["max_update"])


def test_simclr_negatives_come_from_the_global_batch(verdicts):
    """The loss with 2N - 2 negatives (global) is what 2 replicas computed, not the shard loss."""
    verdict = verdicts["simclr"]
    assert verdict["loss_2"] == pytest.approx(verdict["global_negatives_loss"], rel=1e-5)
    assert abs(verdict["per_replica_negatives_loss"] - verdict["global_negatives_loss"]) > 0.05
