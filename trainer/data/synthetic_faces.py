"""`synthetic_faces`: a TFDS data set of procedurally rendered faces.

Generated locally by `face_renderer` (nothing is downloaded) and cached like
any TFDS data set: one directory per config, and the config name encodes every
setting, so different sizes or counts never share a cache.

Splits:
  train: `train_identities` identities, labels 0..train_identities-1.
  test:  `test_identities` held-out identities (disjoint from train),
         labels 0..test_identities-1.
Features: `image` uint8 (S, S, 3), `label` int64 (identity within the split),
`family` int64 (family within the split; 4-8 related identities).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from trainer.data import face_renderer

DATASET_NAME = "synthetic_faces"


@dataclasses.dataclass
class SyntheticFacesConfig(tfds.core.BuilderConfig):
    """Settings of one generated variant; `name` is derived from them when empty."""

    name: str = ""
    image_size: int = 32
    train_identities: int = 600
    images_per_identity: int = 10
    test_identities: int = 100
    test_images_per_identity: int = 10
    seed: int = 0

    def __post_init__(self):
        if not self.name:
            self.name = config_name(self.image_size, self.train_identities,
                                    self.images_per_identity, self.test_identities,
                                    self.test_images_per_identity, self.seed)
        if not self.description:
            self.description = (
                f"{self.image_size}px faces; train {self.train_identities} identities x "
                f"{self.images_per_identity}, test {self.test_identities} held-out "
                f"identities x {self.test_images_per_identity}; seed {self.seed}.")


def config_name(image_size: int, train_identities: int, images_per_identity: int,
                test_identities: int, test_images_per_identity: int, seed: int) -> str:
    """E.g. `s32_tr600x10_te100x10_seed0`."""
    return (f"s{image_size}_tr{train_identities}x{images_per_identity}"
            f"_te{test_identities}x{test_images_per_identity}_seed{seed}")


DEFAULT_CONFIG = SyntheticFacesConfig()

# Re-importing this module (e.g. under another name) must not register twice.
_ALREADY_REGISTERED = DATASET_NAME in tfds.list_builders(with_community_datasets=False)


class SyntheticFaces(tfds.core.GeneratorBasedBuilder,
                     skip_registration=_ALREADY_REGISTERED):
    """Procedurally rendered faces with held-out test identities."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [DEFAULT_CONFIG]
    BUILDER_CONFIG_CLASS = SyntheticFacesConfig

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.image_size
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(size, size, 3), dtype=np.uint8,
                                             encoding_format="png"),
                "label": tfds.features.Scalar(
                    dtype=np.int64, doc="Identity within the split (0-based)."),
                "family": tfds.features.Scalar(
                    dtype=np.int64, doc="Family within the split (0-based)."),
            }),
            supervised_keys=("image", "label"),
            homepage=None,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Everything is rendered locally.
        config = self.builder_config
        return {
            "train": self._generate_examples(
                config.train_identities, config.images_per_identity, identity_offset=0),
            # Test identities sit after the train ones in the global identity
            # sequence, so the two splits never share an identity.
            "test": self._generate_examples(
                config.test_identities, config.test_images_per_identity,
                identity_offset=config.train_identities),
        }

    def _generate_examples(self, num_identities: int, images_per_identity: int,
                           identity_offset: int):
        config = self.builder_config
        identities = face_renderer.split_identities(num_identities, config.seed,
                                                    identity_offset)
        # One identity at a time keeps memory flat at large image sizes.
        for label, identity in enumerate(identities):
            images = face_renderer.render_identity_images(
                identity, images_per_identity, config.image_size, config.seed,
                global_identity=identity_offset + label)
            for index, image in enumerate(images):
                yield f"{label:06d}_{index:04d}", {
                    "image": image, "label": label, "family": identity.family}


def make_builder(data_dir: str, config: SyntheticFacesConfig) -> SyntheticFaces:
    """Builder for `config`, reusing the registered config object of the same name."""
    # TFDS refuses a custom config that shares a name with a class-level one.
    registered = SyntheticFaces.builder_configs.get(config.name)
    if registered is not None and registered == config:
        config = registered
    return SyntheticFaces(config=config, data_dir=data_dir)


def load_synthetic_faces(data_dir: str, image_size: int = DEFAULT_CONFIG.image_size,
                         train_identities: int = DEFAULT_CONFIG.train_identities,
                         images_per_identity: int = DEFAULT_CONFIG.images_per_identity,
                         test_identities: int = DEFAULT_CONFIG.test_identities,
                         test_images_per_identity: int = DEFAULT_CONFIG.test_images_per_identity,
                         seed: int = DEFAULT_CONFIG.seed, shuffle_files: bool = False,
                         ) -> dict:
    """Generate (once; cached in `data_dir`) and load; returns {split: tf.data.Dataset}.

    Each element is a dict with `image`, `label` and `family`.
    """
    builder = prepare_synthetic_faces(data_dir, SyntheticFacesConfig(
        image_size=image_size, train_identities=train_identities,
        images_per_identity=images_per_identity, test_identities=test_identities,
        test_images_per_identity=test_images_per_identity, seed=seed))
    return builder.as_dataset(shuffle_files=shuffle_files)


def prepare_synthetic_faces(data_dir: str, config: SyntheticFacesConfig) -> SyntheticFaces:
    """Builder for `config` with its data generated (a no-op when cached)."""
    builder = make_builder(data_dir, config)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        # Nothing to fetch: a fresh generation never looks for a remote copy.
        try_download_gcs=False,
    ))
    return builder
