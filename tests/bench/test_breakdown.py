"""The cost breakdown: its table from known windows, and one tiny run end to end (no timed assertions)."""

import json
import math
import os
import subprocess
import sys

import pytest

from trainer.commands.bench.breakdown import breakdown_lines, breakdown_report
from trainer.commands.bench.timing import steps_windows

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def windows(*seconds):
    found = steps_windows(batch_size=10, steps_per_window=2)
    for value in seconds:
        found.add(value, value)
    return found


def test_part_cost_is_the_share_of_the_full_step_that_goes():
    results = {"full": windows(2.0, 4.0), "nan_guard": windows(1.0, 2.0), "minimal": windows(1.0, 1.0)}
    report = breakdown_report(results, {"row_update": "not here"}, {"nan_guard": "NaN guard"})
    full, guard = report["rows"]
    assert full["switched_off"] is None and full["part_cost"] is None
    assert guard["over_full"]["median"] == 2.0 and guard["part_cost"] == 0.5
    assert full["over_minimal"]["median"] == pytest.approx(0.375)  # rounds: 0.5 and 0.25
    lines = breakdown_lines(report)
    assert any("nan_guard" in line and "+50.0%" in line for line in lines)
    assert any("row_update: not measured" in line for line in lines)


@pytest.mark.e2e
def test_breakdown_runs_every_switch(tmp_path):
    output = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": REPO, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-m", "trainer.bench", "debug=smoke", "logger=none", "runtime.jit_compile=false",
         "bench.warmup_steps=1", "bench.windows=1", "bench.steps_per_window=2", "bench.pipeline=false",
         "bench.verbose=0", "bench.breakdown=true", f"bench.output={output}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    breakdown = json.loads(output.read_text())["breakdown"]
    names = [row["switched_off"] for row in breakdown["rows"]]
    assert names == [None, "label_checks", "nan_guard", "metrics", "loss_tracking", "callbacks", "full_again"]
    assert set(breakdown["not_applicable"]) == {"row_update"}
    for row in breakdown["rows"]:
        assert row["images_per_second"] > 0 and math.isfinite(row["over_minimal"]["median"])
    assert "cost breakdown" in result.stdout
