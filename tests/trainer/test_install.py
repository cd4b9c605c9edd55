"""An installed (non-editable) copy finds its configs and runs the command line."""

import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed_site(tmp_path_factory):
    wheels = tmp_path_factory.mktemp("wheels")
    site = tmp_path_factory.mktemp("site")
    # Build from a clean copy: setuptools' build/ folder would otherwise land in the checkout.
    source = tmp_path_factory.mktemp("source") / "facetrain"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", "build", "runs", "outputs", ".pytest_data", "*.egg-info", "__pycache__"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                            "--no-build-isolation", "--wheel-dir", str(wheels), str(source)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = list(wheels.glob("facetrain-*.whl"))
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                              "--no-index", "--target", str(site), str(wheel)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-2000:]
    return site


def run_installed(site, cwd, *args):
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=600)


def test_installed_copy_composes_from_packaged_yaml(installed_site, tmp_path):
    where = run_installed(installed_site, tmp_path, "-c", "import trainer, conf; print(trainer.__file__, conf.__file__)")
    assert where.stdout.startswith(str(installed_site)), where.stdout + where.stderr
    job = run_installed(installed_site, tmp_path, "-m", "trainer", "loss=cosface", "--cfg", "job")
    assert job.returncode == 0, job.stderr[-2000:]
    assert "name: cosface" in job.stdout and "name: synthetic_faces" in job.stdout
    mistake = run_installed(installed_site, tmp_path, "-m", "trainer", "loss=arcfce")
    assert mistake.returncode == 2 and "did you mean 'arcface'" in mistake.stderr
