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


@pytest.mark.e2e
def test_every_registered_loss_matches_two_replicas():
    """One subprocess (logical CPUs must be set before TF starts) for all losses."""
    names = LOSSES.names()
    verdicts = check_replicas(names)
    failed = [f"{n}: {v.detail}" for n, v in zip(names, verdicts) if v.status != "PASS"]
    assert not failed, "\n".join(failed)


@pytest.mark.e2e
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


@pytest.mark.e2e
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


class PlainSoftmaxLoss(keras.losses.Loss):
    """Softmax on cosines written on keras.losses.Loss directly: Keras casts its labels to the
    loss dtype, and nothing checks them against the class count."""

    input_kind = "cosines"

    def __init__(self, name="plain_softmax", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        logits = 30.0 * y_pred["cos"]
        labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        target = ops.sum(ops.where(ops.one_hot(labels, ops.shape(logits)[1]) > 0, logits, 0.0), axis=1)
        return ops.logsumexp(logits, axis=1) - target


def test_harness_fails_a_plugin_without_label_checks():
    report = check_loss(PlainSoftmaxLoss, checks=["label_range", "integer_labels", "gradient_bound"])
    assert report["label_range"].status == "FAIL" and "raised no error" in report["label_range"].detail
    assert report["integer_labels"].status == "FAIL"
    assert "labels were cast to the loss dtype" in report["integer_labels"].detail
    # No stated bound: only finiteness is held against it.
    assert report["gradient_bound"].status == "PASS" and "no stated bound" in report["gradient_bound"].detail


def test_harness_fails_an_unclipped_arccos_gradient():
    from losses.combined_margin import CombinedMarginLoss, sphereface_psi

    class RawArcCos(CombinedMarginLoss):
        """The old SphereFace continuation on a bare clamped arccos: 1/sin(theta) near -1."""

        def target_logit(self, target_cos, batch):
            theta = ops.arccos(ops.clip(target_cos, -1.0 + 1e-7, 1.0 - 1e-7))
            return sphereface_psi(theta + self.m2) - self.m3

    report = check_loss(RawArcCos(continuation="sphereface"), checks=["gradient_bound"])
    verdict = report["gradient_bound"]
    assert verdict.status == "FAIL" and "exceeds the stated bound 6400" in verdict.detail, verdict


def test_label_checks_report_what_they_saw():
    report = check_loss("arcface", checks=["label_range", "integer_labels", "gradient_bound"])
    assert report.ok, str(report)
    assert "eager ValueError naming label and 5 classes" in report["label_range"].detail
    assert "loss NaN, gradients NaN" in report["label_range"].detail
    assert "labels 2049-2070" in report["integer_labels"].detail
    assert "bound 6400" in report["gradient_bound"].detail
    skipped = check_loss("triplet", checks=["label_range", "gradient_bound"])
    assert [v.status for v in skipped.verdicts] == ["SKIP", "SKIP"]
