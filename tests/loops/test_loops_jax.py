"""The portable loops (compute_loss) and the GAN's JAX train_step train under the JAX backend."""

import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


# Whole training jobs or subprocesses: the end-to-end tier.
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def results():
    env = {**os.environ, "PYTHONPATH": REPO, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, os.path.join(HERE, "loops_jax_worker.py")],
                          capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 3, done.stderr[-3000:]
    return {line["loop"]: line for line in lines}


@pytest.mark.parametrize("loop", ["supervised", "simclr", "gan"])
def test_loop_trains_under_jax(results, loop):
    result = results[loop]
    assert all(v == v and abs(v) < 1e6 for v in result["losses"])  # finite
    assert result["moved"] > 0  # the embedding model was updated (state synced back)


def test_gan_steps_both_optimizers_under_jax(results):
    # 2 epochs x 2 batches: each optimizer stepped 4 times; the generator's state is carried
    assert results["gan"]["d_steps"] == 4
    assert results["gan"]["g_steps"] == 4
