"""benchmarks/gpu_table.py runs under JAX with TensorFlow unimportable (as on the GPU machine),
at toy sizes, and writes a table of finite rates and ratios (no timed assertions)."""

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "benchmarks", "gpu_table.py")

# Any import of TensorFlow fails, as on a host where it is not installed.
WITHOUT_TENSORFLOW = textwrap.dedent("""
    import runpy, sys

    class NoTensorFlow:
        def find_spec(self, name, path=None, target=None):
            if name == "tensorflow" or name.startswith("tensorflow."):
                raise ImportError("TensorFlow is not installed here (test)")

    sys.meta_path.insert(0, NoTensorFlow())
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
""")

TINY = ["--backbone", "tiny", "--neck", "gap", "--image-size", "32", "--batch", "8", "--classes", "50",
        "--large-classes", "600", "--warmup", "2", "--windows", "1", "--steps", "2", "--peak-tflops", "1"]


@pytest.mark.e2e
def test_gpu_table_runs_without_tensorflow(tmp_path):
    pytest.importorskip("jax")
    output = tmp_path / "table.json"
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": REPO, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-c", WITHOUT_TENSORFLOW, SCRIPT, *TINY, "--output", str(output)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(output.read_text())
    rows = report["rows"]
    assert [r["label"] for r in rows] == ["cosine (full softmax)", "partial_fc 1.0", "partial_fc 0.1",
                                          "partial_fc 0.1, 600 classes"]
    for row in rows:
        assert math.isfinite(row["images_per_second"]) and row["images_per_second"] > 0
        assert math.isfinite(row["mfu"]) and row["mfu"] > 0
    assert math.isfinite(rows[0]["framework_over_minimal"]) and rows[0]["framework_over_minimal"] > 0
    # the sampled head's matmul is counted on top of the backbone's
    assert rows[2]["train_gflops_per_image"] < rows[1]["train_gflops_per_image"]
    assert "MFU" in result.stdout and "partial_fc 0.1" in result.stdout
