"""A stranger's install: the wheel, installed non-editably into a fresh environment, run from
another directory with the README's commands and the default logger.

The fresh environment reuses the test environment's third-party packages (a ``.pth`` line;
the editable checkout's own finder is not activated that way), so nothing is downloaded, but
``trainer`` and ``conf`` come only from the wheel.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest

from tests.helpers import read_tensorboard_scalars, read_wandb_offline

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGES = ("trainer", "losses", "augment", "models", "loops", "conf", "hydra_plugins")
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    wheels = tmp_path_factory.mktemp("wheels")
    # Build from a clean copy: setuptools' build/ folder would otherwise land in the checkout.
    source = tmp_path_factory.mktemp("source") / "facetrain"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", "build", "runs", "outputs", ".pytest_data", "*.egg-info", "__pycache__"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                            "--no-build-isolation", "--wheel-dir", str(wheels), str(source)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    (path,) = list(wheels.glob("facetrain-*.whl"))
    return path


@pytest.fixture(scope="module")
def fresh_python(wheel, tmp_path_factory):
    """The Python of a new virtual environment holding the wheel (not editable)."""
    env = tmp_path_factory.mktemp("env") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=300)
    python = str(env / "bin" / "python")
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(site, "reuse_test_packages.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet",
                              "--no-deps", "--no-index", str(wheel)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-2000:]
    return python, site


def run(python, cwd, *args, timeout=900, **env):
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "WANDB_MODE")}
    environment.update(env)
    return subprocess.run([python, *args], capture_output=True, text=True, env=environment, cwd=cwd,
                          timeout=timeout)


def source_files():
    """Every module and config file of the source tree, as wheel member names."""
    files = set()
    for package in PACKAGES:
        for root, dirs, names in os.walk(os.path.join(REPO, package)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in names:
                if name.endswith(".py") or (package == "conf" and name.endswith(".yaml")):
                    files.add(os.path.relpath(os.path.join(root, name), REPO).replace(os.sep, "/"))
    return files


def test_the_wheel_holds_every_module_and_config(wheel):
    members = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(source_files() - members)
    assert not missing, f"not in the wheel: {missing}"


def test_installed_copy_composes_from_packaged_yaml(fresh_python, tmp_path):
    python, site = fresh_python
    where = run(python, tmp_path, "-c", "import trainer, conf, trainer.evaluation; print(trainer.__file__, conf.__file__)")
    assert where.stdout.startswith(site), where.stdout + where.stderr
    job = run(python, tmp_path, "-m", "trainer", "loss=cosface", "--cfg", "job")
    assert job.returncode == 0, job.stderr[-2000:]
    assert "name: cosface" in job.stdout and "name: synthetic_faces" in job.stdout
    mistake = run(python, tmp_path, "-m", "trainer", "loss=arcfce")
    assert mistake.returncode == 2 and "did you mean 'arcface'" in mistake.stderr


def test_default_job_from_the_wheel_meets_the_readme(fresh_python, tmp_path):
    """``python -m trainer`` as written: ≥ 0.90 held-out, far above untrained, logged everywhere."""
    python, _ = fresh_python
    job = run(python, tmp_path, "-m", "trainer")
    assert job.returncode == 0, (job.stdout + job.stderr)[-3000:]
    console = job.stdout + job.stderr
    assert "\x1b[" not in console, "terminal escape codes in a log"
    assert not re.search(r"oneDNN|absl::InitializeLog|cudart_stub|cuInit", console), console[:2000]
    assert "Traceback" not in console

    run_dir = tmp_path / "runs" / "default"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    final = metrics["final"]["verification"]["accuracy"]
    untrained = metrics["untrained"]["heldout"]["accuracy"]
    assert metrics["status"] == "finished"
    assert final >= 0.90 and final >= untrained + 0.25, (untrained, final)
    assert f"final verification (heldout): accuracy {final:.4f}" in job.stdout
    assert len(re.findall(r"^epoch \d+/12 ", job.stdout, re.M)) == 12  # one line per epoch

    board = read_tensorboard_scalars(run_dir / "tensorboard" / "evaluation")
    assert board["final/heldout/accuracy"] == pytest.approx(final, abs=1e-6)
    assert board["untrained/heldout/accuracy"] == pytest.approx(untrained, abs=1e-6)
    logged = read_wandb_offline(run_dir / "wandb")
    assert logged["final/heldout/accuracy"] == pytest.approx(final, abs=1e-9)

    # The README's evaluation step on the export, with a .bin of the held-out people.
    made = run(python, tmp_path, "-m", "trainer.commands.tools.make_bin", "output=heldout.bin")
    assert made.returncode == 0, made.stderr[-2000:]
    evaluated = run(python, tmp_path, "-m", "trainer.evaluate",
                    "model=runs/default/export/embedding.keras", "bin_files=[heldout.bin]")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    report = json.loads((run_dir / "evaluation" / "report.json").read_text())
    assert report["verification"]["heldout"]["accuracy"] >= 0.88
