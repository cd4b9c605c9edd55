"""facetrain: a Keras 3 training framework for face-recognition embedding models."""

import os

from setuptools import find_packages, setup

PACKAGES = ("trainer", "losses", "augment", "models", "loops", "conf")


def config_groups():
    """``conf.<group>`` for every YAML folder: data packages, listed so setuptools ships them."""
    return [f"conf.{root[5:].replace(os.sep, '.')}" for root, _, files in os.walk("conf")
            if root != "conf" and "__pycache__" not in root and any(f.endswith(".yaml") for f in files)]


setup(
    name="facetrain",
    version="0.1.0",
    description="Keras 3 face-recognition training: losses, backbones, augmentation and "
                "training steps behind registries, configured with Hydra",
    long_description=open("README.md", encoding="utf-8").read() if os.path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # hydra_plugins is a namespace package shared with other Hydra plugins: no __init__ of ours.
    packages=find_packages(include=[p for name in PACKAGES for p in (name, f"{name}.*")]) + config_groups()
    + ["hydra_plugins.facetrain_sweeper"],
    # The Hydra configs travel with the code so an installed copy finds them (pkg://conf).
    package_data={"conf": ["*.yaml"], **{group: ["*.yaml"] for group in config_groups()}},
    include_package_data=True,
    install_requires=[
        "tensorflow>=2.21,<2.22",
        # Upper bound: the newest release tested. trainer/keras_private.py uses Keras internals
        # that move between releases; tests/trainer/test_keras_private.py names what moved.
        "keras>=3.13,<3.16",
        "tensorboard>=2.21,<2.22",  # the default logger; TensorFlow 2.21 no longer installs it
        "hydra-core>=1.3.2,<1.4",
        "omegaconf>=2.3",
        "pyyaml",  # read directly (config errors with line and column, the harness's arguments)
        "tensorflow-datasets>=4.9.10",
        "importlib_resources",  # tensorflow-datasets 4.9.10 needs it for local builders, undeclared
        "numpy",
        # imported directly (TensorFlow and Keras bring them today; declared so that stays true)
        "absl-py",  # logging verbosity of TFDS and TensorFlow
        "h5py",  # .weights.h5 checkpoints read and checked
        "tqdm",  # progress bars of the align and album commands
        "pillow",
        "scipy",
        "matplotlib",
    ],
    extras_require={
        "dev": ["pytest>=8", "hypothesis", "jax[cpu]>=0.4.30", "optuna>=4", "kfp>=2.17,<3", "wandb>=0.19",
                "tf2onnx>=1.17", "onnx>=1.17", "onnxruntime>=1.20", "ai-edge-litert>=2.0",
                "dlib-bin>=20.0", "face-recognition-models>=0.3", "scikit-image>=0.22"],
        "jax": ["jax>=0.4.30"],
        # The default logger's wandb run (offline); without it that logger writes TensorBoard alone.
        "wandb": ["wandb>=0.19"],
        "sweep": ["optuna>=4"],
        "pipeline": ["kfp>=2.17,<3"],  # Kubeflow Pipelines (python -m trainer.kubeflow)
        # SavedModel is TensorFlow's own; TFLite runs in LiteRT, ONNX in onnxruntime
        "export": ["tf2onnx>=1.17", "onnx>=1.17", "onnxruntime>=1.20", "ai-edge-litert>=2.0"],
        "torch": ["torch>=2.4"],  # reading insightface's PyTorch state dicts (backbone.weights=*.pth)
        # Face detection and landmarks for raw photos (python -m trainer.data.align, trainer.album):
        # dlib's wheels, with its detector and landmark model files in a package (no download).
        "align": ["dlib-bin>=20.0", "face-recognition-models>=0.3"],
    },
    entry_points={"console_scripts": ["facetrain=trainer.__main__:main"]},
)
