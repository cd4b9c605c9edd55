"""The checks behind ``trainer.testing.check_loss``; see the package docstring for the list."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

import keras

from trainer.errors import first_line
from trainer.testing import backends
from trainer.testing.inputs import Batch, angle_sweep, high_label_batch, make_batch, permuted, relabelled

CHECKS = ("config_round_trip", "shape_and_dtype", "gradients", "permutation_invariance",
          "relabelling_invariance", "scale_invariance", "sgd_descent", "execution_modes",
          "half_precision", "shape_mismatch_error", "label_range", "integer_labels",
          "gradient_bound", "replicas")
CLASS_INPUTS = ("cosines", "cosines_and_norm")  # losses whose labels index classes
TF_ONLY = ("replicas",)

# |a - b| <= atol + rtol * |b|. Half-precision inputs quantise cosines (~5e-4
# for float16, ~4e-3 for bfloat16), which a scale of 64 turns into logit noise.
TOLERANCES = {"float32": (1e-4, 1e-4), "float16": (1e-2, 5e-2), "bfloat16": (5e-2, 0.3)}


@dataclass
class Verdict:
    check: str
    status: str          # PASS | FAIL | SKIP
    detail: str = ""

    def __str__(self) -> str:
        return f"  {self.status:<4}  {self.check:<24} {self.detail}"


@dataclass
class Report:
    loss: str
    backend: str
    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(v.status != "FAIL" for v in self.verdicts)

    @property
    def failed(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.status == "FAIL"]

    def __getitem__(self, check: str) -> Verdict:
        return next(v for v in self.verdicts if v.check == check)

    def __str__(self) -> str:
        lines = [f"loss {self.loss} ({self.backend})"] + [str(v) for v in self.verdicts]
        counts = {s: sum(v.status == s for v in self.verdicts) for s in ("PASS", "FAIL", "SKIP")}
        summary = ", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n)
        lines.append(f"verdict: {'PASS' if self.ok else 'FAIL'} ({summary})")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"loss": self.loss, "backend": self.backend, "ok": self.ok,
                "verdicts": [vars(v) for v in self.verdicts]}


# -- what is being checked ----------------------------------------------------------
class LossUnderTest:
    """Builds fresh copies of the loss (stateful losses must start from the same state)."""

    def __init__(self, loss: Any, num_classes: int):
        from trainer.registry import LOSSES, split_node

        self.num_classes = num_classes
        if isinstance(loss, keras.losses.Loss):
            cls, config = type(loss), loss.get_config()
            self.label = config.get("name", cls.__name__)
            self._make = lambda overrides: cls.from_config({**config, **overrides})
            self.spec = {"class": f"{cls.__module__}:{cls.__qualname__}", "config": config}
        elif isinstance(loss, type):
            self.label = loss.__name__
            self._make = lambda overrides: loss(**overrides)
            self.spec = {"class": f"{loss.__module__}:{loss.__qualname__}", "config": {}}
        else:
            name, params = split_node(loss, "loss")
            self.label = name
            self._make = lambda overrides: LOSSES.build({"name": name, **params, **overrides},
                                                        num_classes=num_classes)
            self.spec = {"node": {"name": name, **params}}
        probe = self._make({})
        self.cls = type(probe)
        self.input_kind = getattr(probe, "input_kind", "embeddings")
        self.scale_invariant = getattr(probe, "scale_invariant", False)
        self.stochastic = getattr(probe, "stochastic", False)
        self.deterministic_overrides = dict(getattr(probe, "deterministic_overrides", {}))

    def build(self, deterministic: bool = False, **overrides):
        return self._make({**(self.deterministic_overrides if deterministic else {}), **overrides})

    def note(self, deterministic: bool) -> str:
        if deterministic and self.stochastic and self.deterministic_overrides:
            return f" (stochastic loss checked with {self.deterministic_overrides})"
        return ""


def loss_fn(loss, batch: Batch, labels=None, dtype="float32") -> Callable:
    """x -> scalar loss for the batch (labels from the batch unless given)."""
    labels = batch.labels if labels is None else labels

    def fn(x):
        return loss(labels, batch.prediction(x, dtype))

    return fn


def evaluate(subject: LossUnderTest, batch: Batch, x=None, mode="eager", deterministic=True,
             dtype="float32"):
    loss = subject.build(deterministic)
    return backends.value_and_grad(loss_fn(loss, batch, dtype=dtype),
                                   batch.x if x is None else x, mode)


def close(a, b, rtol, atol) -> bool:
    return bool(np.all(np.abs(np.asarray(a) - np.asarray(b)) <= atol + rtol * np.abs(np.asarray(b))))


def max_error(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def separation(batch: Batch, x) -> float:
    """How well the batch does its task: target minus best other cosine, or positive minus negative similarity."""
    x = np.asarray(x, np.float64)
    if batch.kernel is not None:
        w = batch.kernel / np.linalg.norm(batch.kernel, axis=0, keepdims=True)
        cos = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ w
        target = cos[np.arange(len(x)), batch.labels]
        cos[np.arange(len(x)), batch.labels] = -np.inf
        return float(np.mean(target - cos.max(axis=1)))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = unit @ unit.T
    ids = batch.labels if batch.labels is not None else np.arange(len(x)) % (len(x) // 2)
    same = ids[:, None] == ids[None, :]
    np.fill_diagonal(same, False)
    different = ids[:, None] != ids[None, :]
    return float(s[same].mean() - s[different].mean())


# -- the checks ------------------------------------------------------------------------
def check_config_round_trip(subject, batch):
    loss = subject.build(deterministic=True)
    config = loss.get_config()
    copy = type(loss).from_config(config)
    if copy.get_config() != config:
        return "FAIL", f"from_config(get_config()) changed the config: {copy.get_config()} != {config}"
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    if type(revived) is not type(loss):
        return "FAIL", f"keras serialisation revived a {type(revived).__name__}, not {type(loss).__name__}"
    a = backends.value_and_grad(loss_fn(subject.build(True), batch), batch.x)[0]
    b = backends.value_and_grad(loss_fn(type(loss).from_config(config), batch), batch.x)[0]
    if not close(b, a, 1e-6, 1e-6):
        return "FAIL", f"rebuilt loss gives {b:.6g}, original {a:.6g}"
    return "PASS", "get_config -> from_config and keras serialisation give the same loss"


def check_shape_and_dtype(subject, batch):
    loss = subject.build(deterministic=True)
    labels = keras.ops.convert_to_tensor(np.zeros(batch.size, "float32") if batch.labels is None
                                         else batch.labels.astype("float32"))
    per_sample = loss.call(labels, batch.prediction(batch.x))
    shape, dtype = tuple(per_sample.shape), keras.backend.standardize_dtype(per_sample.dtype)
    if shape != (batch.size,):
        return "FAIL", (f"call() returned shape {shape}; it must return per-sample values "
                        f"({batch.size},) so Keras reduces (and scales under distribution) them")
    if dtype != "float32":
        return "FAIL", f"call() returned {dtype}; losses compute in float32"
    total = subject.build(True)(batch.labels, batch.prediction(batch.x))
    if tuple(total.shape) != () or keras.backend.standardize_dtype(total.dtype) != "float32":
        return "FAIL", f"loss(...) gave shape {tuple(total.shape)} {total.dtype}, expected a float32 scalar"
    values = keras.ops.convert_to_numpy(per_sample)
    if not np.all(np.isfinite(values)):
        return "FAIL", f"non-finite per-sample values: {values}"
    return "PASS", f"per-sample ({batch.size},) float32, finite; loss(...) is a float32 scalar"


def check_gradients(subject, batch):
    value, grad = evaluate(subject, batch, deterministic=False)
    if not np.isfinite(value):
        return "FAIL", f"loss is {value}"
    if not np.all(np.isfinite(grad)):
        return "FAIL", f"{int(np.sum(~np.isfinite(grad)))} non-finite gradient entries"
    if not np.any(grad != 0):
        return "FAIL", "every gradient is zero: the loss does not depend on its inputs (stop_gradient?)"
    return "PASS", f"finite, non-zero (max |grad| {np.max(np.abs(grad)):.3g})"


def _invariance(subject, batch, other: Batch, what: str):
    a = evaluate(subject, batch)[0]
    b = evaluate(subject, other)[0]
    if not close(b, a, 1e-5, 1e-5):
        return "FAIL", f"{what} changed the loss from {a:.6g} to {b:.6g}"
    return "PASS", f"{what}: {a:.6g} vs {b:.6g}{subject.note(True)}"


def check_permutation_invariance(subject, batch):
    return _invariance(subject, batch, permuted(batch), "shuffling the batch")


def check_relabelling_invariance(subject, batch):
    if batch.labels is None:
        return "SKIP", "the loss takes no labels"
    return _invariance(subject, batch, relabelled(batch), "renaming the class ids")


def check_scale_invariance(subject, batch):
    if not subject.scale_invariant:
        return "SKIP", "the loss does not declare scale_invariant (it may use the norm)"
    a = evaluate(subject, batch)[0]
    b = evaluate(subject, batch, x=batch.x * np.float32(3.7))[0]
    if not close(b, a, 1e-5, 1e-5):
        return "FAIL", f"declared scale invariant, but x * 3.7 changed the loss from {a:.6g} to {b:.6g}"
    return "PASS", f"x and 3.7 x: {a:.6g} vs {b:.6g}"


def check_sgd_descent(subject, batch, steps=10, step_size=0.05):
    """Normalised SGD on the embeddings must lower the loss AND improve the task.

    The second half catches a loss with the wrong sign: it still descends its own
    value, but pushes targets away (cosine margin / positive-negative similarity falls).
    """
    training = subject.build()
    fn = loss_fn(training, batch)
    x = batch.x.astype(np.float64)
    start_loss = evaluate(subject, batch, deterministic=False)[0]
    for _ in range(steps):
        _, grad = backends.value_and_grad(fn, x.astype("float32"))
        x = x - step_size * np.linalg.norm(x) * grad / (np.linalg.norm(grad) + 1e-12)
    end_loss = evaluate(subject, batch, x=x.astype("float32"), deterministic=False)[0]
    before, after = separation(batch, batch.x), separation(batch, x)
    numbers = f"loss {start_loss:.4g} -> {end_loss:.4g}, separation {before:.3f} -> {after:.3f}"
    if not end_loss < start_loss:
        return "FAIL", f"{steps} SGD steps did not lower the loss: {numbers}"
    if not after > before:
        return "FAIL", (f"minimising the loss pushed targets away (wrong sign?): {numbers}; "
                        "separation = target minus best other cosine, or positive minus negative similarity")
    return "PASS", numbers


def check_execution_modes(subject, batch):
    modes = backends.execution_modes()
    results = {mode: evaluate(subject, batch, mode=mode) for mode in modes}
    value, grad = results[modes[0]]
    worst = []
    for mode in modes[1:]:
        other_value, other_grad = results[mode]
        rtol, atol = TOLERANCES["float32"]
        if not (close(other_value, value, rtol, atol) and close(other_grad, grad, rtol, atol * 10)):
            return "FAIL", (f"{mode} disagrees with {modes[0]}: loss {other_value:.6g} vs {value:.6g}, "
                            f"max grad error {max_error(other_grad, grad):.3g}")
        worst.append(f"{mode} {max(abs(other_value - value), max_error(other_grad, grad)):.1e}")
    return "PASS", f"{' / '.join(modes)} agree (max abs diff: {', '.join(worst)}){subject.note(True)}"


def check_half_precision(subject, batch):
    reference = evaluate(subject, batch)[0]
    parts = []
    for dtype in ("float16", "bfloat16"):
        loss = subject.build(deterministic=True)
        value = loss(batch.labels, batch.prediction(batch.x, dtype))
        got_dtype = keras.backend.standardize_dtype(value.dtype)
        value = float(keras.ops.convert_to_numpy(value))
        rtol, atol = TOLERANCES[dtype]
        if got_dtype != "float32":
            return "FAIL", f"{dtype} inputs gave a {got_dtype} loss; compute in float32"
        if not np.isfinite(value) or not close(value, reference, rtol, atol):
            return "FAIL", (f"{dtype} inputs give {value:.6g}, float32 {reference:.6g} "
                            f"(tolerance {atol} + {rtol} * |value|)")
        parts.append(f"{dtype} {abs(value - reference):.2e}")
    return "PASS", f"abs diff to float32: {', '.join(parts)}"


def check_shape_mismatch_error(subject, batch):
    loss = subject.build(deterministic=True)
    labels = np.zeros(batch.size - 1, "int32") if batch.labels is None else batch.labels[:-1]
    try:
        loss(labels, batch.prediction(batch.x))
    except ValueError as error:
        message = str(error).strip()
        if "\n" in message or len(message) > 400:
            return "FAIL", f"the error is not one clear line: {message[:200]!r}..."
        return "PASS", f"ValueError: {message}"
    except Exception as error:  # a deep backend error is what this check exists to prevent
        return "FAIL", (f"raised {type(error).__name__} from the backend, not a clear ValueError: "
                        f"{first_line(error)[:160]}")
    return "FAIL", f"labels of {batch.size - 1} with {batch.size} predictions raised no error"


def _one_line(error) -> str:
    return first_line(error)[:200]


def _names_label(message: str, label, num_classes: int) -> bool:
    return str(label) in message and str(num_classes) in message


def check_label_range(subject, batch):
    """Labels outside [0, C): a one-line ValueError in eager mode, a NaN loss when compiled.

    Compiled (XLA / jax.jit), the labels are inputs of the program, so nothing
    can raise; the loss must come out NaN for the NaN guard to stop the run.
    """
    if subject.input_kind not in CLASS_INPUTS:
        return "SKIP", "labels are identity ids compared with each other: any integer is valid"
    classes = batch.kernel.shape[1]
    results = []
    for bad in (classes, -1):
        labels = batch.labels.copy()
        labels[1] = bad
        loss = subject.build(deterministic=True)
        try:
            value = loss(labels, batch.prediction(batch.x))
        except ValueError as error:
            message = _one_line(error)
            if "\n" in str(error).strip() or not _names_label(message, bad, classes):
                return "FAIL", (f"eager: label {bad} with {classes} classes raised a ValueError that does not "
                                f"name the label and the class count in one line: {message!r}")
        except Exception as error:  # a deep backend error is what this check exists to prevent
            return "FAIL", (f"eager: label {bad} with {classes} classes raised {type(error).__name__}, "
                            f"not a clear ValueError: {_one_line(error)[:160]}")
        else:
            return "FAIL", (f"eager: label {bad} with {classes} classes raised no error "
                            f"(loss {float(keras.ops.convert_to_numpy(value)):.6g})")
        loss = subject.build(deterministic=True)
        mode = backends.compiled_mode()
        try:
            value, grad = backends.compiled_value_and_grad(
                lambda x, y: loss(y, batch.prediction(x)), batch.x, labels)
        except Exception as error:  # raising is fine too, if it says what is wrong
            if not _names_label(_one_line(error), bad, classes):
                return "FAIL", f"{mode}: label {bad} raised an error that does not name it: {_one_line(error)[:160]}"
            results.append(f"{bad}: {mode} raises")
            continue
        if np.isfinite(value):
            return "FAIL", (f"{mode}: label {bad} with {classes} classes gave a finite loss {value:.6g}; "
                            "a compiled step must make it NaN (the NaN guard then stops the run)")
        results.append(f"{bad}: {mode} loss NaN, gradients {'NaN' if not np.all(np.isfinite(grad)) else 'finite'}")
    return "PASS", f"eager ValueError naming label and {classes} classes; " + "; ".join(results)


def check_integer_labels(subject, batch):
    """A float16 / bfloat16 loss must not round labels above 2,048 (its dtype is for predictions)."""
    if batch.labels is None:
        return "SKIP", "the loss takes no labels"
    high = high_label_batch(subject.input_kind, batch.size, batch.x.shape[1])
    parts = []
    for dtype in ("float16", "bfloat16"):
        prediction = high.prediction(high.x, dtype)
        same_inputs = keras.tree.map_structure(lambda v: keras.ops.cast(v, "float32"), prediction)
        expected = float(keras.ops.convert_to_numpy(subject.build(True)(high.labels, same_inputs)))
        got = float(keras.ops.convert_to_numpy(
            keras.ops.cast(subject.build(True, dtype=dtype)(high.labels, prediction), "float32")))
        rtol = {"float16": 2e-3, "bfloat16": 1e-2}[dtype]  # the loss value itself is rounded to dtype
        if not np.isfinite(got) or not close(got, expected, rtol, 1e-3):
            return "FAIL", (f"a {dtype} loss gives {got:.6g} with labels {int(high.labels.min())}..."
                            f"{int(high.labels.max())}, a float32 loss {expected:.6g} on the same inputs: "
                            "labels were cast to the loss dtype")
        parts.append(f"{dtype} {got:.5g} vs {expected:.5g}")
    return "PASS", f"labels {int(high.labels.min())}-{int(high.labels.max())}: " + ", ".join(parts)


def check_gradient_bound(subject, batch):
    """Finite gradients, within the loss's stated bound, for target cosines from -1 to 1.

    Eager and compiled, float32 and float16 cosines (mixed precision: a gradient
    above 65,504 becomes inf there). The bound is ``loss.gradient_bound(C)``.
    """
    if subject.input_kind not in CLASS_INPUTS:
        return "SKIP", "not a class-cosine loss: no angle to sweep"
    cos, labels, norms = angle_sweep(batch.kernel.shape[1])
    probe = subject.build(deterministic=True)
    bound = probe.gradient_bound(cos.shape[1]) if hasattr(probe, "gradient_bound") else None
    worst = 0.0
    for dtype in ("float32", "float16"):
        for mode in ("eager", backends.compiled_mode()):
            loss = subject.build(deterministic=True)

            def fn(c):
                return keras.ops.sum(keras.ops.cast(
                    loss.call(labels, {"cos": c, "norm": keras.ops.cast(norms, c.dtype)}), "float32"))

            _, grad = backends.value_and_grad(fn, cos.astype(dtype), mode)
            if not np.all(np.isfinite(grad)):
                rows = sorted(set(np.argwhere(~np.isfinite(grad))[:, 0].tolist()))
                return "FAIL", (f"{dtype} {mode}: non-finite gradient at target cosine "
                                f"{[float(cos[r, labels[r]]) for r in rows[:3]]}")
            largest = float(np.max(np.abs(grad)))
            if bound is not None and largest > bound * (1 + 1e-3):
                row = int(np.argmax(np.max(np.abs(grad), axis=1)))
                return "FAIL", (f"{dtype} {mode}: |dL/dcos| {largest:.4g} exceeds the stated bound "
                                f"{bound:.4g} at target cosine {float(cos[row, labels[row]])!r}")
            worst = max(worst, largest)
    stated = f"bound {bound:.4g}" if bound is not None else "no stated bound (gradient_bound() is None)"
    return "PASS", (f"{len(cos)} target cosines in [-1, 1], float32/float16, eager/compiled: "
                    f"max |dL/dcos| {worst:.4g}, {stated}")


CHECK_FUNCTIONS = {
    "config_round_trip": check_config_round_trip,
    "shape_and_dtype": check_shape_and_dtype,
    "gradients": check_gradients,
    "permutation_invariance": check_permutation_invariance,
    "relabelling_invariance": check_relabelling_invariance,
    "scale_invariance": check_scale_invariance,
    "sgd_descent": check_sgd_descent,
    "execution_modes": check_execution_modes,
    "half_precision": check_half_precision,
    "shape_mismatch_error": check_shape_mismatch_error,
    "label_range": check_label_range,
    "integer_labels": check_integer_labels,
    "gradient_bound": check_gradient_bound,
}


def run_check(check, *args) -> Verdict:
    try:
        status, detail = CHECK_FUNCTIONS[check](*args)
    except Exception as error:
        where = traceback.extract_tb(error.__traceback__)[-1]
        message = first_line(error)[:200]
        status, detail = "FAIL", (f"raised {type(error).__name__}: {message} "
                                  f"({os.path.basename(where.filename)}:{where.lineno})")
    return Verdict(check, status, detail)


def check_loss(loss, checks=None, replicas: bool = True, batch_size: int = 8, dim: int = 8,
               num_classes: int = 5, seed: int = 0) -> Report:
    """Run the contract checks on ``loss`` (registered name, config node, class or instance)."""
    subject = LossUnderTest(loss, num_classes)
    batch = make_batch(subject.input_kind, batch_size, dim, num_classes, seed)
    report = Report(subject.label, backends.backend_name())
    for check in checks or CHECKS:
        if check == "replicas":
            if not replicas:
                continue
            if backends.backend_name() != "tensorflow":
                report.verdicts.append(Verdict(check, "SKIP", "tf.distribute check: TensorFlow backend only"))
            else:
                report.verdicts.append(check_replicas([subject.spec])[0])
            continue
        report.verdicts.append(run_check(check, subject, batch))
    return report


def check_replicas(specs, timeout: float = 600.0) -> list[Verdict]:
    """2-replica MirroredStrategy vs one device, for several losses in ONE subprocess.

    Logical CPU devices must be configured before TensorFlow initialises, hence the
    subprocess. ``specs`` are registry nodes (``"arcface"``, ``{"name": ...}``),
    ``{"node": ...}`` or ``{"class": "module:Class", "config": {...}}``.
    """
    specs = [s if isinstance(s, dict) and ("node" in s or "class" in s) else {"node": s}
             for s in specs]
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    try:
        done = subprocess.run([sys.executable, "-m", "trainer.testing.replicas"],
                              input=json.dumps(specs), capture_output=True, text=True,
                              env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [Verdict("replicas", "FAIL", f"the replica subprocess ran past {timeout:.0f} s")] * len(specs)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or len(lines) != len(specs):
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
        return [Verdict("replicas", "FAIL", f"replica subprocess failed: {tail}")] * len(specs)
    return [Verdict(**json.loads(line)) for line in lines]
