"""Quiet commands: every command, run in a tiny configuration, keeps framework lines off stderr.

A command that worked leaves stderr empty (TensorFlow's C++ lines, absl's start-up notices,
Keras warnings and TFDS's "Downloading" lines are in its log); one that cannot run here (an
optional package missing) says so in one ``error:`` line.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from tests.commands.test_commands import COMMANDS, REPO

pytestmark = pytest.mark.e2e
DATA = ["data=memory", "data.train_identities=20", "data.images_per_identity=4", "data.test_identities=10",
        "data.test_images_per_identity=4"]


def run(command, *args, cwd):
    # The test session's own TF_CPP_MIN_LOG_LEVEL is not a user's choice: run as a user would.
    environment = {k: v for k, v in {**os.environ, "PYTHONPATH": REPO}.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-m", command, *args], capture_output=True, text=True, timeout=900,
                          env=environment, cwd=cwd)


def image_folder(root):
    from PIL import Image

    rng = np.random.default_rng(0)
    for person in ("ann", "bob"):
        os.makedirs(root / person)
        for index in range(2):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / person / f"{index}.png")
    return root


def test_every_command_keeps_framework_lines_off_stderr(tmp_path):
    trained = run("trainer", "debug=smoke", *DATA, "run.name=quiet", cwd=tmp_path)
    assert trained.returncode == 0 and trained.stderr == "", trained.stderr[-3000:]
    run_dir = tmp_path / "runs" / "quiet"
    log = (run_dir / "train.log").read_text()
    assert "final verification" in log and not (run_dir / "__main__.log").exists()
    model = str(run_dir / "export" / "embedding.keras")
    faces = image_folder(tmp_path / "faces")
    tiny = {
        "trainer.evaluate": [f"model={model}"],
        "trainer.export": [f"model={model}", "formats=[tflite_float32]", "latency=false", "pairs=20", "folds=4"],
        "trainer.gate": [f"new_model={model}", f"old_model={model}", *DATA],
        "trainer.tools.cross_model": [f"old_model={model}", f"new_model={model}", "pairs=20", *DATA],
        "trainer.tools.make_bin": [f"output={tmp_path / 'h.bin'}", "pairs=20", *DATA],
        "trainer.tools.show_augment": [f"out={tmp_path / 'grid.png'}", f"images={faces}", "rows=2", "columns=1",
                                       "size=32"],
        "trainer.data.convert": [f"input={faces}", f"output={tmp_path / 'tfr'}", "format=folder", "shards=1"],
        "trainer.list": [],
        "trainer.bench": ["debug=smoke", *DATA, "bench.warmup_steps=1", "bench.windows=1",
                          "bench.steps_per_window=1", "bench.pipeline=false", "bench.minimal=false",
                          f"bench.output={tmp_path / 'bench' / 'bench.json'}"],
        "trainer.kubeflow": ["compile", f"output={tmp_path / 'pipeline.yaml'}", "debug=smoke"],
        "trainer.data.align": [f"input={faces}", f"output={tmp_path / 'aligned'}"],
    }
    noisy = {}
    for command in COMMANDS:
        if command == "trainer":
            continue
        result = run(command, *tiny.get(command, ["--help"]), cwd=tmp_path)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        worked = result.returncode in (0, 1) and not lines  # the gate's 1 is "hold"
        refused = result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ")
        if not (worked or refused):
            noisy[command] = (result.returncode, result.stderr[-1500:])
    assert noisy == {}
    assert os.path.exists(tmp_path / "runs" / "quiet" / "evaluation" / "evaluate.log")


def test_a_bug_in_training_is_one_line_and_its_traceback_is_in_train_log(tmp_path):
    result = run("trainer", "debug=smoke", *DATA, "run.name=bug", "+callbacks.boom.name=tests.commands.boom.Boom",
                 cwd=tmp_path)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    log = tmp_path / "runs" / "bug" / "train.log"
    assert str(log) in lines[0]
    text = log.read_text()
    assert "Traceback" in text and "ZeroDivisionError: a bug inside training" in text
    assert "untrained verification" in text  # what the console showed is there too


def test_a_data_mistake_leaves_no_folder(tmp_path):
    result = run("trainer", "data=folder", f"data.path={tmp_path / 'missing'}", cwd=tmp_path)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    assert os.listdir(tmp_path) == []
