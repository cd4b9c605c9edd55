"""What a new user meets in the first hour: the default logger, several overrides, --help,
their own folder of photos, readable output."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import read_tensorboard_scalars, read_wandb_offline
from trainer.data.errors import DataError
from trainer.data.sources.folder import FolderSource, choose_holdout
from trainer.records import evaluation_scalars, wandb_identity

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMMANDS = ("trainer", "trainer.evaluate", "trainer.bench", "trainer.testing", "trainer.list",
            "trainer.data.convert", "trainer.tools.make_bin", "trainer.tools.show_augment")


@pytest.mark.parametrize("module", COMMANDS)
def test_every_command_answers_help(module, tmp_path):
    result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True,
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": REPO}, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"python -m {module}" in result.stdout, result.stdout[:500]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("folder", [
    "loss=cosface,optimizer.lr=0.003,trainer.epochs=2",
    "a=b/c:d;e#f?g'h",
    "visages-été-ß-東京",
    "x" * 300,
    "",
])
def test_wandb_identity_is_valid_for_any_folder_name(folder, tmp_path):
    run_dir = str(tmp_path / "runs" / folder) if folder else str(tmp_path) + "/"
    run_id, name = wandb_identity(run_dir)
    assert re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", run_id), run_id
    assert wandb_identity(run_dir) == (run_id, name)  # a rerun resumes the same wandb run
    assert wandb_identity(run_dir + "-2")[0] != run_id
    assert len(name) <= 128 and name


def test_evaluation_scalars_flatten_numbers_only():
    results = {"heldout": {"accuracy": 0.9, "pairs": 6000, "tar_at_far": {"1e-03": 0.5},
                           "skipped": "why", "nan": float("nan"), "flag": True}}
    assert evaluation_scalars("final", results) == {
        "final/heldout/accuracy": 0.9, "final/heldout/pairs": 6000.0,
        "final/heldout/tar_at_far/1e-03": 0.5}


@pytest.mark.e2e
def test_default_logger_with_several_overrides_records_the_final_evaluation(run_cli, tmp_path):
    """The README's style (two and more overrides) on the default logger (TensorBoard + wandb)."""
    result = run_cli("loss=cosface", "trainer.epochs=2", "optimizer.lr=0.003", "data.train_identities=200",
                     "eval.pairs=400", env={"WANDB_MODE": None})
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.name.startswith("cosface-")]  # the changed group
    metrics = json.loads((run_dir / "metrics.json").read_text())
    final = metrics["final"]["verification"]["accuracy"]
    assert metrics["status"] == "finished"
    assert read_tensorboard_scalars(run_dir / "tensorboard" / "evaluation")["final/heldout/accuracy"] \
        == pytest.approx(final, abs=1e-6)
    assert read_wandb_offline(run_dir / "wandb")["final/heldout/accuracy"] == pytest.approx(final)
    epochs = re.findall(r"^epoch (\d)/2  loss (\S+)  images/s (\S+)  \(\d+ s\)$", result.stdout, re.M)
    assert [e[0] for e in epochs] == ["1", "2"], result.stdout
    # rounded for people: at most 4 significant digits; the full value stays in metrics.json
    assert len(epochs[0][1].replace(".", "").lstrip("0")) <= 4
    assert metrics["epochs"][0]["loss"] == pytest.approx(float(epochs[0][1]), rel=1e-3)


# -- own data: a folder without held-out people still gets evaluated ---------------------------

def write_people(root, identities, images=3, size=16, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(identities):
        folder = root / f"person_{i:03d}"
        folder.mkdir(parents=True)
        for j in range(images):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{j}.png")
    return root


def test_choose_holdout_is_seeded_and_keeps_people_with_two_photos():
    names = [f"p{i}" for i in range(50)]
    labels = [i for i in range(50) for _ in range(2 if i % 5 else 1)]  # every 5th has one photo
    held, why = choose_holdout(names, labels, "auto", seed=3)
    assert why is None and len(held) == 12  # auto: 10 %, but up to 20 while that is at most a quarter
    assert held == choose_holdout(names, labels, "auto", seed=3)[0]
    assert held != choose_holdout(names, labels, "auto", seed=4)[0]
    assert all(int(n[1:]) % 5 for n in held)  # single-photo people are never held out
    assert choose_holdout(names, labels, 0, seed=3) == ([], "data.holdout=0")
    assert len(choose_holdout(names, labels, 12, seed=3)[0]) == 12
    with pytest.raises(DataError, match="data.holdout='many' is not a number"):
        choose_holdout(names, labels, "many", seed=3)
    with pytest.raises(DataError, match="only 40 identities have two or more"):
        choose_holdout(names, labels, 45, seed=3)
    held, why = choose_holdout(names[:5], labels[:9], "auto", seed=0)
    assert held == [] and "too few" in why


def test_folder_without_heldout_path_holds_out_identities(tmp_path):
    root = write_people(tmp_path / "people", identities=30)
    source = FolderSource(path=str(root), image_size=16, holdout=4)
    assert source.num_classes == 26 and len(source.heldout_identities) == 4
    assert not set(source.heldout_identities) & set(source.identities)
    assert sorted(set(source.labels)) == list(range(26)) and source.num_examples == 78
    assert sorted(set(source.heldout_labels)) == list(range(4)) and len(source.heldout_files) == 12
    for file, label in zip(source.files, source.labels):  # relabelled consistently with names
        assert os.path.basename(os.path.dirname(file)) == source.identities[label]
    labels = [int(label) for _, label in source.heldout().as_numpy_iterator()]
    assert sorted(labels) == sorted(source.heldout_labels)

    tiny = FolderSource(path=str(write_people(tmp_path / "tiny", identities=3)), image_size=16)
    assert tiny.heldout() is None and "too few" in tiny.heldout_unavailable
