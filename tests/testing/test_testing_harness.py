"""The loss contract harness over every registered loss, its failure reports and its command."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import pytest
from keras import ops

from trainer.registry import LOSSES
from trainer.testing import check_loss, check_replicas

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_registered_loss_passes_the_harness(name):
    report = check_loss(name, replicas=False)
    assert report.ok, str(report)


def test_every_registered_loss_matches_two_replicas():
    """One subprocess (logical CPUs must be set before TF starts) for all losses."""
    names = LOSSES.names()
    verdicts = check_replicas(names)
    failed = [f"{n}: {v.detail}" for n, v in zip(names, verdicts) if v.status != "PASS"]
    assert not failed, "\n".join(failed)


def test_every_registered_loss_passes_under_jax():
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-m", "trainer.testing", "loss=all", "--json"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    reports = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert {r["loss"] for r in reports} == set(LOSSES.names()), done.stderr[-2000:]
    assert all(r["backend"] == "jax" for r in reports)
    failed = [(r["loss"], v) for r in reports for v in r["verdicts"] if v["status"] == "FAIL"]
    assert not failed and done.returncode == 0, failed


class WrongSignLoss(keras.losses.Loss):
    """Softmax on cosines with the sign flipped: minimising it pushes targets away."""

    input_kind = "cosines"

    def __init__(self, name="wrong_sign", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        logits = 30.0 * y_pred["cos"]
        target = ops.take_along_axis(logits, ops.cast(ops.reshape(y_true, (-1, 1)), "int32"), axis=1)[:, 0]
        return -(ops.logsumexp(logits, axis=1) - target)


def test_wrong_sign_loss_gets_a_readable_fail():
    report = check_loss(WrongSignLoss, replicas=False)
    assert not report.ok
    verdict = report["sgd_descent"]
    assert verdict.status == "FAIL" and "wrong sign" in verdict.detail
    text = str(report)
    assert "FAIL  sgd_descent" in text and text.splitlines()[-1].startswith("verdict: FAIL")
    assert report["gradients"].status == "PASS"  # the other checks still report on their own


def test_reduced_scalar_loss_fails_shape_check():
    class ScalarLoss(WrongSignLoss):
        def call(self, y_true, y_pred):
            return ops.mean(-super().call(y_true, y_pred))

    report = check_loss(ScalarLoss, checks=["shape_and_dtype"])
    assert report["shape_and_dtype"].status == "FAIL"
    assert "per-sample" in report["shape_and_dtype"].detail


def test_command_gives_a_verdict_for_a_broken_plugin(tmp_path):
    (tmp_path / "broken_losses.py").write_text(textwrap.dedent('''
        from keras import ops
        from losses.cosface import CosFaceLoss

        class NegatedCosFace(CosFaceLoss):
            """CosFace with the wrong sign."""
            def call(self, y_true, y_pred):
                return -super().call(y_true, y_pred)
    '''))
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-m", "trainer.testing", "loss=broken_losses.NegatedCosFace",
                           "loss.margin=0.2", "replicas=false"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "FAIL  sgd_descent" in done.stdout and "wrong sign" in done.stdout
    assert "verdict: FAIL" in done.stdout
