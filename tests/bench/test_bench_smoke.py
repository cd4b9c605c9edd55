"""The benchmark runs end to end at smoke sizes and writes a complete JSON report (no timed assertions)."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUICK = ["debug=smoke", "bench.warmup_steps=1", "bench.windows=2", "bench.steps_per_window=2", "bench.pipeline_batches=2",
         "logger=none", "callbacks.checkpoint.keep=1"]


def run_bench(tmp_path, *overrides, backend="tensorflow"):
    output = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": REPO, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-m", "trainer.bench", *QUICK, *overrides,
                             f"bench.output={output}"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(output.read_text()), result.stdout


@pytest.mark.e2e
def test_bench_tensorflow_report(tmp_path):
    report, stdout = run_bench(tmp_path)
    for part in ("framework", "minimal", "pipeline"):
        assert report[part]["windows"] == 2 and report[part]["images_per_second"] > 0
    for ratio in ("framework_over_minimal", "pipeline_over_framework"):
        assert report["ratios"][ratio]["pairs"] == 2
        assert set(report["targets"][ratio]) == {"target", "met"}
    flops = report["flops"]
    assert flops["train_flops_per_image"] == 3 * flops["forward_flops_per_image"] > 0
    assert report["memory"]["peak_host_gib"] > 0
    assert report["overheads"]["retraces_during_windows"] == 0
    assert report["job"]["image_size"] == 32 and report["job"]["batch_size"] == 16
    assert "framework / minimal" in stdout and "pipeline / framework" in stdout


@pytest.mark.e2e
def test_bench_jax_in_memory_without_data(tmp_path):
    """The H100 recipe's path at toy sizes: JAX, random in-memory batches, no data set, no pipeline."""
    pytest.importorskip("jax")
    report, _ = run_bench(tmp_path, "bench.num_classes=50", "bench.image_size=16", "bench.pipeline=false",
                          "bench.peak_tflops=1.0", backend="jax")
    assert report["job"]["backend"] == "jax" and report["job"]["num_classes"] == 50
    assert report["pipeline"] is None and "pipeline_over_framework" not in report["ratios"]
    assert report["framework"]["utilisation"] > 0
    assert report["flops"]["xla_train_flops_per_image"] > 0


def test_bench_config_composes_with_trainer_overrides():
    from trainer.config import compose

    cfg = compose(["backbone=iresnet50", "neck=e", "bench.num_classes=93431"], config_name="bench")
    assert cfg.backbone.name == "iresnet50" and cfg.bench.num_classes == 93431
    assert cfg.trainer.batch_size == compose([]).trainer.batch_size  # the trainer's own defaults


def test_bench_config_mistake_is_one_line(capsys):
    from trainer.commands.bench.__main__ import main

    assert main(["bench.windowz=3"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error[-1].startswith("error:") and "windowz" in error[-1]
