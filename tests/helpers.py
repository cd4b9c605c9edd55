"""Readers of what a run leaves for people's tools: TensorBoard event files, wandb offline runs and
pages as headless Chromium shows them."""

from __future__ import annotations

import glob
import json
import os
import shutil
import struct
import subprocess

WANDB_BLOCK = 32 * 1024  # wandb's run file is a LevelDB-style log of 32 KiB blocks
WANDB_HEADER = 7  # ":W&B" + 3 bytes of version


def one_error_line(result) -> str:
    """The single ``error:`` line of a command that refused its input (exit status 2)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


def read_tensorboard_scalars(folder) -> dict:
    """{tag: last value} of every scalar in the event files of ``folder`` (pictures are skipped)."""
    return {tag: points[-1][1] for tag, points in read_tensorboard_series(folder).items()}


def tensorboard_values(folder):
    """(step, summary value) of every summary in the event files of ``folder``."""
    import tensorflow as tf

    for path in sorted(glob.glob(os.path.join(str(folder), "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                yield event.step, value


def read_tensorboard_series(folder) -> dict:
    """{tag: [(step, value), ...]} of every scalar in the event files of ``folder``."""
    import tensorflow as tf

    series = {}
    for step, value in tensorboard_values(folder):
        if value.metadata.plugin_data.plugin_name not in ("", "scalars"):
            continue
        number = float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") else float(value.simple_value)
        series.setdefault(value.tag, []).append((step, number))
    return series


def read_tensorboard_images(folder) -> dict:
    """{tag: (width, height)} of every image summary in the event files of ``folder`` (PNG decoded)."""
    import io

    import tensorflow as tf
    from PIL import Image

    images = {}
    for _, value in tensorboard_values(folder):
        if value.metadata.plugin_data.plugin_name == "images":
            width, height, png = tf.make_ndarray(value.tensor)[:3]
            assert Image.open(io.BytesIO(png)).size == (int(width), int(height))
            images[value.tag] = (int(width), int(height))
    return images


def read_tensorboard_hparams(folder) -> dict:
    """{name: value} of the HParams session started in the event files of ``folder``."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    hparams = {}
    for _, value in tensorboard_values(folder):
        if value.metadata.plugin_data.plugin_name == "hparams":
            data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
            if data.HasField("session_start_info"):
                for name, entry in data.session_start_info.hparams.items():
                    kind = entry.WhichOneof("kind")
                    hparams[name] = getattr(entry, kind)
    return hparams


def chromium():
    """Headless Chromium's path; skips the test where none is installed."""
    import pytest

    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium)")


def browse(page, screenshot=None, size=(1100, 900)):
    """The page's DOM after its load handlers ran (and a screenshot, if asked)."""
    browser = chromium()
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--allow-file-access-from-files", "--virtual-time-budget=5000", f"--window-size={size[0]},{size[1]}"]
    url = "file://" + os.path.abspath(page)
    dom = subprocess.run(flags + ["--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    if screenshot:
        subprocess.run(flags + [f"--screenshot={screenshot}", url], capture_output=True, timeout=120)
        assert os.path.getsize(screenshot) > 0
    return dom


def _wandb_records(data: bytes):
    """The records of a wandb run file: chunks (full=1, first=2, middle=3, last=4) in blocks."""
    position, pending = WANDB_HEADER, b""
    while position + 7 <= len(data):
        left_in_block = WANDB_BLOCK - position % WANDB_BLOCK
        if left_in_block < 7:
            position += left_in_block
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        if length == 0 and kind == 0:  # zero padding up to the block's end
            position += left_in_block
            continue
        chunk = data[position + 7:position + 7 + length]
        position += 7 + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk
            pending = b""


def read_wandb_offline(wandb_dir) -> dict:
    """{key: value} of everything logged to the offline runs under ``wandb_dir`` (history and summary)."""
    from wandb.proto import wandb_internal_pb2

    logged = {}
    for path in sorted(glob.glob(os.path.join(str(wandb_dir), "offline-run-*", "*.wandb"))):
        with open(path, "rb") as f:
            data = f.read()
        for raw in _wandb_records(data):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(raw)
            kind = record.WhichOneof("record_type")
            items = record.history.item if kind == "history" else \
                record.summary.update if kind == "summary" else []
            for item in items:
                logged[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return logged
