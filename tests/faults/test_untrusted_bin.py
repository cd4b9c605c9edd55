"""A verification .bin is a pickle: loading one must never run code named inside it."""

import os
import pickle

import numpy as np
import pytest

from trainer.data.errors import DataError
from trainer.evaluation.verification import read_bin, write_bin


class RunsAShellCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_hostile_bin_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "hostile.bin"
    path.write_bytes(pickle.dumps(([RunsAShellCommand(marker)], [True])))
    with pytest.raises(DataError, match=r"refused to load \w+\.system"):
        read_bin(str(path))
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_insightface_style_bins_still_load(tmp_path, protocol):
    """bytes images with a list or a NumPy array of booleans, old and new pickle protocols."""
    images = np.random.default_rng(0).integers(0, 255, (4, 8, 8, 3), dtype=np.uint8)
    written = tmp_path / "ours.bin"
    write_bin(str(written), images[:2], images[2:], [True, False])
    bins, _ = pickle.loads(written.read_bytes())
    old_style = tmp_path / "old.bin"
    old_style.write_bytes(pickle.dumps((list(bins), np.array([True, False])), protocol=protocol))
    loaded, issame = read_bin(str(old_style))
    assert loaded.shape == (4, 8, 8, 3) and issame.tolist() == [True, False]


def test_a_file_that_is_not_a_pickle_says_so(tmp_path):
    """pickle's own errors on a foreign file are not reported as a refused global."""
    path = tmp_path / "notes.bin"
    path.write_text("hello, not a pickle\n")
    with pytest.raises(DataError, match=r"is not a verification \.bin \(pickle of images and issame\)"):
        read_bin(str(path))
