"""``trainer.evaluate``'s summary.html beside report.json, as a browser shows it: the ROC and the
score histograms load by relative path, so the folder can be moved or copied whole."""

import json
import re
import shutil

import keras
import numpy as np

from tests.helpers import browse
from trainer.commands import evaluate as evaluate_command
from trainer.evaluation.verification import write_bin

SIZE = 16


def tiny_model(path):
    images = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Dense(8, kernel_initializer=keras.initializers.RandomNormal(seed=3))(
        keras.layers.Flatten()(keras.layers.Rescaling(1 / 255.0)(images)))
    keras.Model(images, keras.layers.UnitNormalization(axis=-1, name="l2_normalize")(x)).save(path)
    return path


def test_the_summary_shows_the_roc_and_the_score_histograms(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, SIZE, SIZE, 3), dtype=np.uint8)
    write_bin(str(tmp_path / "pairs.bin"), images[0::2], images[1::2], np.arange(20) % 2 == 0)
    model = tiny_model(str(tmp_path / "embedding.keras"))
    output = tmp_path / "out"
    assert evaluate_command.main([f"model={model}", f"bin_files=[{tmp_path / 'pairs.bin'}]", "folds=2",
                                  f"output={output}"]) == 0
    report = json.loads((output / "report.json").read_text())
    for key, name in (("roc_png", "roc.png"), ("scores_png", "scores.png")):
        assert report[key].endswith(name) and (output / name).stat().st_size > 1000
    page = (output / "summary.html").read_text()
    assert re.findall(r"<img src='([^']+)'", page) == ["roc.png", "scores.png"]  # relative paths

    moved = tmp_path / "moved"
    shutil.copytree(output, moved)  # relative paths: the copy shows its own pictures
    dom = browse(str(moved / "summary.html"), screenshot=str(tmp_path / "summary.png"))
    assert "Verification" in dom and "pairs" in dom
    body = dom.split("<body", 1)[1]  # the page's own script names the marker too
    assert body.startswith(' data-images-loaded="2"'), body[:2000]
    assert "(missing:" not in body


def test_a_missing_picture_is_marked_on_the_page(tmp_path):
    from trainer.evaluation.suite import summary_html

    page = tmp_path / "summary.html"
    page.write_text(summary_html({"model_path": "m.keras", "verification": {}, "roc_png": "/gone/roc.png"}))
    body = browse(str(page)).split("<body", 1)[1]
    assert body.startswith(' data-images-loaded="0"') and "(missing: roc.png)" in body
