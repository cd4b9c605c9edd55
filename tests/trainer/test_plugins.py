"""A separate pip package adds a loss and its YAML through entry points, without editing us."""

import os
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SETUP = """
from setuptools import setup
setup(
    name="facetrain-plugin-demo",
    version="0.0.1",
    packages=["demo_plugin", "demo_plugin.conf", "demo_plugin.conf.loss"],
    package_data={"demo_plugin.conf.loss": ["*.yaml"]},
    entry_points={
        "facetrain.loss": ["demo_margin = demo_plugin.losses:DemoMarginLoss"],
        "facetrain.conf": ["demo_plugin = demo_plugin.conf"],
    },
)
"""

LOSS = '''
import keras
from losses.cosface import CosFaceLoss


@keras.saving.register_keras_serializable(package="demo_plugin")
class DemoMarginLoss(CosFaceLoss):
    """CosFace under another name, shipped by a plugin package."""
'''

YAML = """# A plugin's loss.  loss=demo_margin
name: demo_margin
scale: 30.0
margin: 0.2
"""


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    source = tmp_path_factory.mktemp("plugin_src")
    (source / "demo_plugin" / "conf" / "loss").mkdir(parents=True)
    (source / "setup.py").write_text(textwrap.dedent(SETUP))
    (source / "demo_plugin" / "__init__.py").write_text("")
    (source / "demo_plugin" / "losses.py").write_text(LOSS)
    (source / "demo_plugin" / "conf" / "__init__.py").write_text("")
    (source / "demo_plugin" / "conf" / "loss" / "__init__.py").write_text("")
    (source / "demo_plugin" / "conf" / "loss" / "demo_margin.yaml").write_text(YAML)
    site = tmp_path_factory.mktemp("plugin_site")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--no-build-isolation", "--target", str(site), str(source)],
        capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    return site


def run_python(code, site):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), REPO])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=300)


def test_plugin_loss_is_registered_built_and_composed(plugin_site):
    code = textwrap.dedent("""
        import trainer
        from trainer.registry import LOSSES
        assert "demo_margin" in LOSSES.names(), LOSSES.names()
        loss = trainer.build("loss", {"name": "demo_margin", "scale": 16.0, "margin": 0.1})
        assert type(loss).__name__ == "DemoMarginLoss" and loss.scale == 16.0
        cfg = trainer.compose(["loss=demo_margin"])
        assert cfg.loss.name == "demo_margin" and cfg.loss.scale == 30.0
        try:
            trainer.compose(["loss=demo_margn"])
        except trainer.ConfigError as error:
            assert "did you mean 'demo_margin'" in str(error), error
        else:
            raise AssertionError("a misspelt plugin loss was accepted")
        print("plugin ok")
    """)
    result = run_python(code, plugin_site)
    assert "plugin ok" in result.stdout, result.stderr[-3000:]


def test_without_the_plugin_the_name_is_unknown():
    result = run_python("from trainer.registry import LOSSES; print('demo_margin' in LOSSES.names())",
                        "")
    assert result.stdout.strip().splitlines()[-1] == "False"
