"""Runtime selection: strategies, precision, clear one-line failures, resume planning."""

import json
import time

import keras
import numpy as np
import pytest
from omegaconf import OmegaConf

from trainer.resume import Segment, resume_segments
from trainer.registry import ConfigError
from trainer.runtime import setup_runtime, worker_dir


def node(**values):
    return OmegaConf.create({"name": "cpu", **values})


@pytest.fixture(autouse=True)
def float32_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_cpu_runtime_defaults():
    runtime = setup_runtime(node())
    assert (runtime.name, runtime.num_replicas, runtime.jit_compile, runtime.steps_per_execution) == \
        ("cpu", 1, True, 1)
    assert runtime.is_chief and runtime.strategy is None


@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16"])
def test_precision_sets_the_global_policy(precision):
    setup_runtime(node(precision=precision))
    assert keras.mixed_precision.global_policy().name == precision


def test_mixed_float16_compiles_with_loss_scaling():
    setup_runtime(node(precision="mixed_float16"))
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)


@pytest.mark.parametrize("values, words", [
    ({"name": "tpux"}, "unknown runtime 'tpux'"),
    ({"precision": "float16"}, "runtime.precision"),
    ({"steps_per_execution": 0}, "steps_per_execution"),
    ({"name": "jax"}, "KERAS_BACKEND=jax"),
    ({"name": "multiworker"}, "TF_CONFIG"),
    ({"name": "gpu"}, "no GPU"),
])
def test_impossible_runtimes_fail_with_one_line(values, words, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError) as error:
        setup_runtime(node(**values))
    assert words in str(error.value) and "\n" not in str(error.value)


def test_tpu_where_there_is_none_fails_in_seconds():
    started = time.monotonic()
    with pytest.raises(ConfigError, match="no TPU on this machine"):
        setup_runtime(node(name="tpu", tpu="local"))
    assert time.monotonic() - started < 5


def test_mirrored_without_gpus_mirrors_the_cpu():
    runtime = setup_runtime(node(name="mirrored"))
    assert runtime.num_replicas >= 1 and runtime.strategy is not None


def test_non_chief_workers_write_below_the_run_dir(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps(
        {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}))
    assert worker_dir("runs/x", node(name="multiworker")).endswith("workers/worker-1")
    assert worker_dir("runs/x", node(name="cpu")) == "runs/x"


@pytest.mark.parametrize("epoch, batch, expected", [
    (0, 0, [Segment(0, 3)]),
    (1, 2, [Segment(1, 2, 2), Segment(2, 3)]),
    (2, 2, [Segment(2, 3, 2)]),
    (1, 6, [Segment(2, 3)]),          # saved on an epoch's last batch
    (3, 0, []),                        # already finished
])
def test_resume_segments(epoch, batch, expected):
    segments = resume_segments(epoch, batch, epochs=3, steps_per_epoch=6)
    assert segments == expected
    trained = sum((s.end_epoch - s.start_epoch) * 6 - s.skip_batches for s in segments)
    assert trained == 18 - min(epoch * 6 + batch, 18)
