"""runtime.compile_cache: a second run of the same program compiles nothing new (JAX, TensorFlow's XLA)."""

import os
import subprocess
import sys
import textwrap

import pytest

from trainer import compile_cache

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A tiny Keras model trained for one step through setup_runtime, as a job would.
JAX_PROGRAM = textwrap.dedent("""
    import sys
    import numpy as np
    import keras
    from omegaconf import OmegaConf
    from trainer.runtime import setup_runtime
    runtime = setup_runtime(OmegaConf.create({"name": "cpu", "compile_cache": sys.argv[1]}))
    assert runtime.compile_cache["active"], runtime.compile_cache
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(optimizer="sgd", loss="mse", jit_compile=True)
    model.fit(np.ones((8, 4), "float32"), np.zeros((8, 3), "float32"), epochs=1, verbose=0)
""")

TENSORFLOW_PROGRAM = textwrap.dedent("""
    import sys
    from trainer.compile_cache import tensorflow_environment
    tensorflow_environment(sys.argv[1])     # before TensorFlow starts
    import tensorflow as tf

    @tf.function(jit_compile=True)
    def step(x):
        return tf.reduce_sum(tf.matmul(x, x) * 2.0)

    step(tf.ones((8, 8))).numpy()
""")


# Whole training jobs or subprocesses: the end-to-end tier.
pytestmark = pytest.mark.e2e


def run_twice(tmp_path, program, backend):
    folder = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": REPO, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
           "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    env.pop("TF_XLA_FLAGS", None)
    found = []
    for _ in range(2):
        result = subprocess.run([sys.executable, "-c", program, str(folder)], env=env, cwd=tmp_path,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        found.append(compile_cache.entries(str(folder)))
    return found


def test_setting_names_the_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    auto = compile_cache.cache_dir("auto", "jax")
    assert auto.startswith(str(tmp_path / "facetrain" / "compile" / "jax-"))
    assert compile_cache.cache_dir(str(tmp_path / "mine"), "jax") == str(tmp_path / "mine")
    for off in (None, False, "", "null", "off"):
        assert compile_cache.cache_dir(off, "jax") is None
    assert compile_cache.enable(None, "jax")["active"] is False


def test_jax_second_run_compiles_nothing(tmp_path):
    pytest.importorskip("jax")
    first, second = run_twice(tmp_path, JAX_PROGRAM, "jax")
    assert first, "the first run cached no program"
    assert second == first


def test_tensorflow_second_run_compiles_nothing(tmp_path):
    pytest.importorskip("tensorflow")
    first, second = run_twice(tmp_path, TENSORFLOW_PROGRAM, "tensorflow")
    assert first, "the first run cached no program"
    assert second == first


def test_the_training_command_gives_tensorflow_the_cache_before_it_starts(tmp_path):
    """``python -m trainer`` imports TensorFlow only after composing the config, so the XLA cache of
    ``runtime.compile_cache`` is in effect for the job (a second run of it compiles nothing)."""
    pytest.importorskip("tensorflow")
    folder = tmp_path / "cache"
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    env.pop("TF_XLA_FLAGS", None)
    command = [sys.executable, "-m", "trainer", "debug=smoke", "data=memory", "logger=none", "run.export=false",
               "eval.untrained=false", f"runtime.compile_cache={folder}", "run.name=cached"]
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    import json

    recorded = json.loads((tmp_path / "runs" / "cached" / "metrics.json").read_text())["startup"]["compile_cache"]
    assert recorded["active"] and recorded["directory"] == str(folder), recorded
    assert compile_cache.entries(str(folder)), "the job's XLA programs were not cached"
