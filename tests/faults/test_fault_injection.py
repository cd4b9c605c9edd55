"""Every failure ends the same way (issue 25): injected faults against the contract in harness.py.

The fast tests read broken files in-process, as the commands read them: each is either read or
refused with a ``ConfigError`` (one line, exit 2 at the edge), never another exception, and
nothing is lost silently. The ``e2e`` tests run the commands in subprocesses.
"""

import io
import json
import os
import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.faults.harness import (EXIT_MISTAKE, assert_contract, assert_true_status, flip_byte, full_disk,
                                  read_only, run_command, run_status, user_module)
from trainer.registry import ConfigError

SIZE = 16


def png_bytes(seed=0, size=SIZE, kind="PNG"):
    from PIL import Image

    image = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, kind)
    return buffer.getvalue()


def identity_folders(root, identities=4, images=3, kind="PNG"):
    for i in range(identities):
        os.makedirs(root / f"p{i}", exist_ok=True)
        for j in range(images):
            (root / f"p{i}" / f"{j}.{kind.lower()}").write_bytes(png_bytes(i * 10 + j, kind=kind))
    return root


def read_source(source):
    """The images a source's training pipeline yields (the pipeline as training reads it)."""
    return [label for _, label in source.train().as_numpy_iterator()]


# -- data errors name their file ------------------------------------------------------------------

def folder_source(root, **options):
    from trainer.registry import DATASETS

    return DATASETS.build({"name": "folder", "path": str(root), "image_size": SIZE, "holdout": 0, **options})


def valid_markers_but_corrupt(path):
    """A JPEG that starts and ends like one (passes the signature check), with garbage between."""
    data = path.read_bytes()
    path.write_bytes(data[:20] + bytes(range(200)) + b"\xff\xd9")


@pytest.mark.parametrize("on_corrupt", ["stop", "skip"])
def test_a_decoder_error_inside_tf_data_names_the_file(tmp_path, on_corrupt):
    from trainer.data.errors import data_error_inside

    root = identity_folders(tmp_path / "people", kind="JPEG")
    valid_markers_but_corrupt(root / "p3" / "2.jpeg")
    source = folder_source(root, on_corrupt=on_corrupt)
    if on_corrupt == "stop":
        with pytest.raises(Exception) as failure:
            read_source(source)
        line = str(data_error_inside(failure.value))
        assert line.startswith(f"corrupt record 11 of {root / 'p3' / '2.jpeg'}: cannot be decoded ("), line
        return
    assert len(read_source(source)) == 11
    [(file, record, reason)] = source.corrupt_records
    assert (file, record) == (str(root / "p3" / "2.jpeg"), 11) and reason.startswith("cannot be decoded")


def test_an_unreadable_file_in_held_out_data_is_counted_with_its_reason(tmp_path):
    root = identity_folders(tmp_path / "people")
    held = identity_folders(tmp_path / "held", identities=2)
    os.symlink("loop.png", held / "p1" / "loop.png")  # a symbolic link to itself
    source = folder_source(root, heldout_path=str(held), on_corrupt="skip")
    assert len(list(source.heldout().as_numpy_iterator())) == 6
    assert source.corrupt_records == [(str(held / "p1" / "loop.png"), 6,
                                       "cannot be read (Too many levels of symbolic links)")]


def test_a_tfrecord_shard_of_random_bytes_is_named(tmp_path):
    from trainer.commands.data.convert import convert
    from trainer.data.errors import data_error_inside
    from trainer.registry import DATASETS

    convert(str(identity_folders(tmp_path / "people")), str(tmp_path / "tfr"), format="folder", shards=2)
    shards = sorted((tmp_path / "tfr").glob("train-*.tfrecord"))
    shards[-1].write_bytes(os.urandom(300))
    node = {"name": "tfrecord", "path": str(tmp_path / "tfr"), "image_size": SIZE}
    skipping = DATASETS.build({**node, "on_corrupt": "skip"})
    assert len(read_source(skipping)) == 6  # the first shard's images
    [(file, record, reason)] = skipping.corrupt_records
    assert file == str(shards[-1]) and record == 0 and "corrupted record at 0" in reason
    with pytest.raises(Exception) as stopped:
        read_source(DATASETS.build(node))
    # the edge reads the one line back from TensorFlow's error
    assert str(data_error_inside(stopped.value)).startswith(f"corrupt record 0 of {shards[-1]}: cannot be read")


def test_data_path_naming_a_file_is_one_line(tmp_path):
    from trainer.data.errors import DataError

    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(DataError, match=r"data.path=.*a.txt is a file, not a folder"):
        folder_source(tmp_path / "a.txt")


# -- files the commands read, hand-edited or corrupt ----------------------------------------------

def test_hand_edited_metrics_and_latest_fall_back_to_the_sidecars(tmp_path, capsys):
    from trainer.callbacks.checkpoint import checkpoint_candidates, latest_checkpoint
    from trainer.records import RunReport, read_metrics

    (tmp_path / "metrics.json").write_text("[1, 2, 3]")
    assert read_metrics(str(tmp_path)) == {}
    report = RunReport(str(tmp_path), None)
    report.start()
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "running"
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "ckpt-000000004.weights.h5").write_bytes(b"x")
    (folder / "ckpt-000000004.json").write_text(json.dumps(
        {"file": "ckpt-000000004.weights.h5", "epoch": 1, "batch": 0, "step": 4}))
    for edited in ('["ckpt"]', '{"file": "../../etc/passwd", "step": 9}', '{"file": "ckpt-000000009.weights.h5", '
                   '"step": "nine"}'):
        (folder / "latest.json").write_text(edited)
        assert latest_checkpoint(str(tmp_path)) is None
        assert [c["step"] for c in checkpoint_candidates(str(folder))] == [4]  # the sidecar remains
    assert "is not a checkpoint record (edited or damaged)" in capsys.readouterr().out


def test_the_failure_status_is_written_in_place_when_the_file_cannot_be_replaced(tmp_path):
    from trainer.records import write_status_in_place

    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"status": "running", "epochs": [{"epoch": 1, "loss": 1.0}]}))
    size = path.stat().st_size
    assert write_status_in_place(str(path), "failed: OSError: " + "no space " * 30)
    assert path.stat().st_size == size  # the same blocks: no new space needed
    assert json.loads(path.read_text())["status"].startswith("failed: OSError: no space")


def bin_file(path, images, issame):
    with open(path, "wb") as f:
        pickle.dump((images, issame), f)
    return str(path)


@pytest.mark.parametrize("images,issame,expected", [
    ([b"not an image"] * 4, [True, False], "an image in it cannot be decoded"),
    ([png_bytes(i) for i in range(4)], True, "is not a verification .bin: it must hold a list of images"),
])
def test_a_malformed_verification_bin_is_one_line(tmp_path, images, issame, expected):
    from trainer.data.errors import DataError
    from trainer.evaluation.verification import read_bin

    with pytest.raises(DataError, match=expected):
        read_bin(bin_file(tmp_path / "x.bin", images, issame))


@pytest.mark.parametrize("high_byte", [0x7F, 0xFF])
def test_a_bin_whose_frame_length_claims_terabytes_is_one_line(tmp_path, high_byte):
    # One flipped byte in the pickle's frame length (found by the property below): pickle then
    # asks its file for hundreds of gigabytes, which TensorFlow's GFile.read(n) answered with a
    # segmentation fault. In a child process, so that a crash fails this test, not the test run.
    import subprocess
    import sys

    good = bin_file(tmp_path / "good.bin", [png_bytes(i) for i in range(4)], [True, False])
    data = bytearray(open(good, "rb").read())
    assert data[2] == pickle.FRAME[0]  # protocol 4+: FRAME, then an 8-byte little-endian length
    data[7] = high_byte  # the length's byte 4 (x 2^32)
    path = tmp_path / "x.bin"
    path.write_bytes(bytes(data))
    code = ("import sys\nfrom trainer.evaluation.verification import read_bin\n"
            "try:\n    read_bin(sys.argv[1])\nexcept Exception as error:\n    print(type(error).__name__, error)\n")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("DataError") and "is not a verification .bin" in done.stdout
    assert done.stdout.count("\n") == 1


def test_verification_of_one_identity_says_why():
    from trainer.evaluation.verification import PairsError, sample_pairs

    with pytest.raises(PairsError, match="needs at least two identities.* hold 1 identities"):
        sample_pairs(np.zeros(5, np.int32), 10, 0)


def test_an_onnx_constant_given_as_value_float_is_read(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from models.weights.sources import read_onnx

    constant = helper.make_node("Constant", [], ["w"], value_float=0.5)
    graph = helper.make_graph([constant, helper.make_node("Mul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), str(tmp_path / "m.onnx"))
    assert read_onnx(str(tmp_path / "m.onnx")).kind == "onnx"


def test_output_paths_of_the_wrong_kind_are_one_line(tmp_path):
    from trainer.commands.outputs import output_file, output_folder

    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(ConfigError, match="is a folder; give the file to write"):
        output_file(tmp_path)
    with pytest.raises(ConfigError, match="is a file; give a folder to write into"):
        output_folder(tmp_path / "a.txt")
    assert output_file(tmp_path / "new.bin") and output_folder(tmp_path / "new")


@pytest.mark.parametrize("source,kind", [("def broken(:\n", "SyntaxError"),
                                         ("raise RuntimeError('boom')\n", "RuntimeError")])
def test_a_user_module_that_fails_to_import_is_named(tmp_path, monkeypatch, source, kind):
    import trainer

    monkeypatch.syspath_prepend(str(tmp_path))
    name = user_module(tmp_path, source)
    with pytest.raises(ConfigError, match=f"its module {name} fails when imported \\({kind}"):
        trainer.compose(["debug=smoke", f"loss.name={name}.Loss"])


def test_a_config_plugin_that_fails_to_import_is_named_and_left_out(monkeypatch, capsys):
    import importlib.metadata

    import trainer
    from trainer import config

    broken = importlib.metadata.EntryPoint("broken_plugin", "facetrain_no_such_plugin_module",
                                           config.PLUGIN_CONFIG_GROUP)
    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None, **kw: [broken] if group == config.PLUGIN_CONFIG_GROUP
                        else real(group=group, **kw))
    monkeypatch.setattr(config, "_BROKEN_PLUGINS", {})
    assert trainer.compose(["debug=smoke"]).trainer.epochs == 1  # other commands are not broken
    assert "plugin broken_plugin = facetrain_no_such_plugin_module fails to import" in capsys.readouterr().err


# -- property: one corrupt byte in any file a command reads -----------------------------------------

def refused_or_read(read):
    """``read()`` either works or refuses in one line (a ConfigError); anything else fails the test."""
    try:
        return read()
    except ConfigError as error:
        assert "\n" not in str(error)
        return None


BYTES = st.tuples(st.integers(0, 10**6), st.integers(0, 255))


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(flip=BYTES)
def test_one_corrupt_byte_in_state_files_and_bins_is_read_or_refused(tmp_path_factory, flip):
    from trainer.callbacks.checkpoint import latest_checkpoint
    from trainer.evaluation.verification import read_bin
    from trainer.records import read_metrics

    folder = tmp_path_factory.mktemp("state")
    (folder / "checkpoints").mkdir()
    (folder / "metrics.json").write_text(json.dumps({"status": "running", "epochs": [{"epoch": 1}]}))
    (folder / "checkpoints" / "latest.json").write_text(json.dumps(
        {"file": "ckpt-000000001.weights.h5", "epoch": 0, "batch": 1, "step": 1}))
    (folder / "checkpoints" / "ckpt-000000001.weights.h5").write_bytes(b"w")
    bin_path = bin_file(folder / "x.bin", [png_bytes(i) for i in range(4)], [True, False])
    for path in (folder / "metrics.json", folder / "checkpoints" / "latest.json", bin_path):
        flip_byte(path, *flip)
    assert isinstance(read_metrics(str(folder)), dict)
    state = refused_or_read(lambda: latest_checkpoint(str(folder)))
    assert state is None or state["file"] == "ckpt-000000001.weights.h5"
    refused_or_read(lambda: read_bin(bin_path))


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(flip=BYTES, kind=st.sampled_from(["PNG", "JPEG"]))
def test_one_corrupt_byte_in_an_image_is_decoded_or_counted_never_lost(tmp_path_factory, flip, kind):
    root = identity_folders(tmp_path_factory.mktemp("faces"), identities=2, images=2, kind=kind)
    flip_byte(root / "p1" / f"1.{kind.lower()}", *flip)
    source = folder_source(root, on_corrupt="skip")
    assert len(read_source(source)) + len(source.corrupt_records) == 4  # every image trained or counted


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(flip=BYTES)
def test_one_corrupt_byte_in_a_tfrecord_shard_is_read_or_named(tmp_path_factory, flip):
    from trainer.commands.data.convert import convert
    from trainer.registry import DATASETS

    folder = tmp_path_factory.mktemp("tfr")
    convert(str(identity_folders(folder / "people", identities=2, images=2)), str(folder / "tfr"),
            format="folder", shards=1)
    [shard] = (folder / "tfr").glob("train-*.tfrecord")
    flip_byte(shard, *flip)
    source = refused_or_read(lambda: DATASETS.build({"name": "tfrecord", "path": str(folder / "tfr"),
                                                     "image_size": SIZE, "on_corrupt": "skip"}))
    if source is not None:
        read = len(read_source(source))
        assert read == 4 or source.corrupt_records  # a record that did not come back is named


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(flip=BYTES, which=st.sampled_from(["train.rec", "train.idx", "property"]))
def test_one_corrupt_byte_in_a_recordio_set_is_read_or_named(tmp_path_factory, flip, which):
    from trainer.data.formats import recordio
    from trainer.registry import DATASETS

    folder = tmp_path_factory.mktemp("rec")
    recordio.write_insightface(str(folder), [(label, png_bytes(label * 2 + i)) for label in range(2) for i in range(2)],
                               image_size=SIZE)
    flip_byte(folder / which, *flip)
    source = refused_or_read(lambda: DATASETS.build({"name": "recordio", "path": str(folder), "image_size": SIZE,
                                                     "on_corrupt": "skip"}))
    if source is not None:
        assert len(read_source(source)) + len(source.corrupt_records) == source.num_examples


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(flip=BYTES)
def test_one_corrupt_byte_in_a_yaml_config_is_composed_or_refused(tmp_path_factory, flip):
    from trainer.config import compose

    folder = tmp_path_factory.mktemp("conf")
    (folder / "loss").mkdir()
    (folder / "loss" / "mine.yaml").write_text("name: arcface\nscale: 64.0\nmargin: 0.5\n")
    flip_byte(folder / "loss" / "mine.yaml", *flip)
    refused_or_read(lambda: compose(["debug=smoke", "loss=mine"], config_dirs=[str(folder)]))


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """A tiny ``.keras`` model and an ONNX graph with Conv and BatchNormalization weights."""
    import keras

    folder = tmp_path_factory.mktemp("models")
    model = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Conv2D(2, 3), keras.layers.Flatten(),
                              keras.layers.Dense(4)])
    model.save(folder / "m.keras")
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weights = [numpy_helper.from_array(np.ones(shape, np.float32), name) for name, shape in
               [("w", (2, 3, 3, 3)), ("g", (2,)), ("b", (2,)), ("m", (2,)), ("v", (2,))]]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["y"], name="bn")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 6, 6])], weights)
    onnx.save(helper.make_model(graph), str(folder / "m.onnx"))
    return folder


@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(flip=BYTES)
def test_one_corrupt_byte_in_a_model_file_is_loaded_or_refused(model_files, tmp_path_factory, flip):
    import shutil

    from models.weights.sources import read_onnx
    from trainer.export.model_files import load_embedding_model

    folder = tmp_path_factory.mktemp("flipped")
    for name in ("m.keras", "m.onnx"):
        shutil.copy(model_files / name, folder / name)
        flip_byte(folder / name, *flip)
    refused_or_read(lambda: load_embedding_model(str(folder / "m.keras")))
    refused_or_read(lambda: read_onnx(str(folder / "m.onnx")))


# -- the commands, as a user runs them --------------------------------------------------------------

SMOKE = ["debug=smoke", "eval.pairs=32", "logger=none"]


@pytest.mark.e2e
def test_disk_full_while_checkpointing_is_one_line_and_a_true_status(tmp_path):
    with full_disk(tmp_path / "disk", "3m") as disk:
        run_dir = os.path.join(disk, "run")
        result = run_command("trainer", *SMOKE, "trainer.epochs=2", f"run.dir={run_dir}", cwd=tmp_path)
        assert_contract(result, EXIT_MISTAKE, "No space left on device")
        assert run_status(run_dir).startswith("failed")


@pytest.mark.e2e
def test_a_read_only_run_folder_is_one_line(tmp_path):
    with read_only(tmp_path / "ro") as folder:
        result = run_command("trainer", *SMOKE, f"hydra.run.dir={folder}/run", cwd=tmp_path)
        assert_contract(result, EXIT_MISTAKE, "cannot write")


@pytest.mark.e2e
def test_corrupt_data_stops_the_command_line_naming_the_file(tmp_path):
    root = identity_folders(tmp_path / "people", identities=6, kind="JPEG")
    valid_markers_but_corrupt(root / "p4" / "1.jpeg")
    run_dir = tmp_path / "run"
    result = run_command("trainer", *SMOKE, "data=folder", f"data.path={root}", "data.image_size=16",
                         "data.holdout=0", "trainer.batch_size=4", "eval=verification", f"run.dir={run_dir}",
                         cwd=tmp_path)
    assert_contract(result, EXIT_MISTAKE, f"corrupt record 13 of {root / 'p4' / '1.jpeg'}: cannot be decoded")
    assert_true_status(run_dir, result)


@pytest.mark.e2e
def test_command_outputs_of_the_wrong_kind_and_bad_bins_are_one_line(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    people = identity_folders(tmp_path / "people")
    assert_contract(run_command("trainer.tools.make_bin", f"output={tmp_path}", cwd=tmp_path), EXIT_MISTAKE,
                    "is a folder")
    assert_contract(run_command("trainer.data.convert", f"input={people}", f"output={tmp_path / 'a.txt'}",
                                cwd=tmp_path), EXIT_MISTAKE, "is a file")
