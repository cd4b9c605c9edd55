"""facetrain: a Keras 3 training framework for face-recognition embedding models."""

from setuptools import find_packages, setup

PACKAGES = ("trainer", "losses", "augment", "models", "loops", "conf")

setup(
    name="facetrain",
    version="0.1.0",
    description="Keras 3 face-recognition training: losses, backbones, augmentation and "
                "training steps behind registries, configured with Hydra",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=[p for name in PACKAGES for p in (name, f"{name}.*")]),
    # The Hydra configs travel with the code so an installed copy finds them (pkg://conf).
    package_data={"conf": ["*.yaml", "**/*.yaml"]},
    include_package_data=True,
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.13",
        "hydra-core>=1.3.2,<1.4",
        "omegaconf>=2.3",
        "tensorflow-datasets>=4.9.10",
        "importlib_resources",  # tensorflow-datasets 4.9.10 needs it for local builders, undeclared
        "wandb>=0.19",
        "numpy",
        "pillow",
        "scipy",
        "matplotlib",
    ],
    extras_require={
        "dev": ["pytest>=8", "hypothesis", "jax[cpu]>=0.4.30", "hydra-optuna-sweeper>=1.2"],
        "jax": ["jax>=0.4.30"],
        "sweep": ["hydra-optuna-sweeper>=1.2"],
    },
    entry_points={"console_scripts": ["facetrain=trainer.__main__:main"]},
)
