"""End to end: RecordIO and folder data sets train through ``python -m trainer``; the .bin callback runs."""

import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from test_data_formats import make_images, write_folder, write_rec  # noqa: E402

from tests.helpers import read_tensorboard_scalars  # noqa: E402


@pytest.mark.e2e
def test_recordio_trains_with_the_verification_callback(tmp_path, run_cli):
    from trainer.evaluation.verification import write_bin

    path = write_rec(tmp_path / "rec", make_images(classes=6, per_class=8, size=20))
    images = np.stack([image for _, image in make_images(classes=4, per_class=2, size=20, seed=9)])
    write_bin(str(tmp_path / "tiny.bin"), images[0::2], images[1::2], [True, False, True, False])
    result = run_cli("debug=smoke", "run.name=rec", "data=recordio", f"data.path={path}",
                     "callbacks=with_verification", f"callbacks.verification.bin_files=[{tmp_path / 'tiny.bin'}]",
                     "callbacks.verification.every_steps=2", "callbacks.verification.folds=2",
                     "eval.pairs=10")
    assert result.returncode == 0, result.stderr[-2000:]
    run = tmp_path / "runs" / "rec"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["num_classes"] == 6
    history = json.loads((run / "verification.json").read_text())
    assert [h["step"] for h in history] == [2, 3]  # every 2 steps, and at the end
    assert (run / "best" / "embedding.keras").exists() and (run / "best" / "best.json").exists()
    # the same numbers reach TensorBoard (the last step's value is what is read back)
    board = read_tensorboard_scalars(run / "tensorboard" / "verification")
    assert board["verification/tiny/accuracy"] == pytest.approx(history[-1]["results"]["tiny"]["accuracy"])


@pytest.mark.e2e
def test_folder_trains_and_a_missing_path_is_one_line(tmp_path, run_cli):
    path = write_folder(tmp_path / "faces", make_images(classes=5, per_class=8, size=20))
    result = run_cli("debug=smoke", "run.name=folder", "data=folder", f"data.path={path}",
                     "callbacks=none")
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "runs" / "folder" / "metrics.json").read_text())["status"] == "finished"
    missing = run_cli("debug=smoke", "data=folder", f"data.path={tmp_path / 'nope'}", "callbacks=none")
    assert missing.returncode == 2
    assert f"error: data.path={tmp_path / 'nope'} does not exist" in missing.stderr
