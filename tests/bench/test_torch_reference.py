"""benchmarks/torch_reference_step.py: the PyTorch rebuild of arcface_torch's step that the GPU table
is compared with. It needs PyTorch (the GPU machine has it; the project does not depend on it)."""

import json
import math
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "benchmarks", "torch_reference_step.py")
# The reference's trainable-and-fixed parameter counts (../shared/reference/face.md), 512-d embedding
PARAMETERS = {18: 24_025_600, 50: 43_590_848, 100: 65_156_160}


@pytest.mark.parametrize("depth", sorted(PARAMETERS))
def test_the_rebuilt_iresnet_has_the_reference_parameter_count(depth):
    pytest.importorskip("torch")
    sys.path.insert(0, os.path.dirname(SCRIPT))
    try:
        from torch_reference_step import IResNet
    finally:
        sys.path.remove(os.path.dirname(SCRIPT))
    model = IResNet(depth)
    assert sum(p.numel() for p in model.parameters()) == PARAMETERS[depth]
    assert sum(p.numel() for p in model.parameters() if not p.requires_grad) == 512  # the last BN's gamma


def test_the_reference_step_trains_at_a_toy_size(tmp_path):
    pytest.importorskip("torch")
    output = tmp_path / "reference.json"
    done = subprocess.run([sys.executable, SCRIPT, "--depth", "18", "--image-size", "32", "--batch", "4",
                           "--classes", "10", "--warmup", "1", "--windows", "2", "--steps", "1",
                           "--output", str(output)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(output.read_text())
    assert math.isfinite(report["images_per_second"]) and report["images_per_second"] > 0
    assert len(report["window_rates"]) == 2 and "images/s" in done.stdout
