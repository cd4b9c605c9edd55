"""The procedural face renderer and the `synthetic_faces` TFDS builder."""

import numpy as np
import pytest

from trainer.data import face_renderer

TINY = dict(image_size=16, train_identities=6, images_per_identity=3,
            test_identities=5, test_images_per_identity=2, seed=3)


# --------------------------------------------------------------------------
# Renderer (pure NumPy)


def test_render_split_is_deterministic_under_seed():
    first = face_renderer.render_split(5, 3, 24, seed=7)
    again = face_renderer.render_split(5, 3, 24, seed=7)
    other = face_renderer.render_split(5, 3, 24, seed=8)
    assert np.array_equal(first.images, again.images)
    assert not np.array_equal(first.images, other.images)


@pytest.mark.parametrize("size", [16, 32, 112])
def test_shapes_dtypes_and_labels(size):
    split = face_renderer.render_split(4, 2, size, seed=0)
    assert split.images.shape == (8, size, size, 3)
    assert split.images.dtype == np.uint8
    assert split.labels.dtype == np.int64 and split.families.dtype == np.int64
    assert split.labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_single_image_matches_batched_rendering():
    identity = face_renderer.split_identities(3, seed=1)[2]
    batch = face_renderer.render_identity_images(identity, 3, 20, seed=1, global_identity=2)
    for index in range(3):
        rng = np.random.default_rng([1, face_renderer._IMAGE_STREAM, 2, index])
        assert np.array_equal(face_renderer.render_face(identity, rng, 20), batch[index])


def test_images_of_one_identity_vary():
    images = face_renderer.render_split(1, 6, 24, seed=0).images.astype(float)
    pairwise = [np.abs(images[i] - images[j]).mean() for i in range(6) for j in range(i)]
    assert min(pairwise) > 2.0


def test_identities_differ_without_nuisance():
    # With every nuisance off, an identity renders the same each time and
    # any difference between identities comes from the identity itself.
    split = face_renderer.render_split(4, 2, 32, seed=0, variation=face_renderer.NO_NUISANCE)
    images = split.images.astype(float)
    for label in range(4):
        assert np.array_equal(images[2 * label], images[2 * label + 1])
    across = [np.abs(images[2 * a] - images[2 * b]).mean() for a in range(4) for b in range(a)]
    assert min(across) > 2.0


def test_train_and_test_identities_are_disjoint():
    train = face_renderer.split_identities(6, seed=0, identity_offset=0)
    test = face_renderer.split_identities(5, seed=0, identity_offset=6)
    train_geometry = {tuple(sorted(i.geometry.items())) for i in train}
    assert len(train_geometry) == 6
    assert not train_geometry & {tuple(sorted(i.geometry.items())) for i in test}


def test_families_have_four_to_eight_members_and_share_skin_tone():
    families = face_renderer.family_partition(200, seed=0)
    assert families[0] == 0 and np.all(np.diff(families) >= 0)
    assert np.all(np.diff(families) <= 1)
    sizes = np.bincount(families)
    low, high = face_renderer.FAMILY_SIZE_RANGE
    assert sizes.min() >= low and sizes.max() <= high + low  # last family may absorb a remainder

    identities = face_renderer.split_identities(60, seed=0)
    skin = np.array([i.skin_rgb for i in identities])
    family = np.array([i.family for i in identities])
    distance = np.abs(skin[:, None] - skin[None]).sum(-1)
    same = family[:, None] == family[None]
    off_diagonal = ~np.eye(len(family), dtype=bool)
    assert distance[same & off_diagonal].mean() < 0.5 * distance[~same].mean()


# --------------------------------------------------------------------------
# TFDS builder


@pytest.fixture(scope="module")
def synthetic_faces():
    pytest.importorskip("tensorflow_datasets")
    from trainer.data import synthetic_faces as module

    return module


@pytest.fixture(scope="module")
def tiny_data_dir(tmp_path_factory, synthetic_faces):
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    synthetic_faces.load_synthetic_faces(data_dir, **TINY)
    return data_dir


def _examples(datasets, split):
    return [{key: value.numpy() for key, value in example.items()}
            for example in datasets[split]]


def test_config_name_encodes_every_setting(synthetic_faces):
    config = synthetic_faces.SyntheticFacesConfig(**TINY)
    assert config.name == "s16_tr6x3_te5x2_seed3"
    names = {synthetic_faces.SyntheticFacesConfig(**{**TINY, key: value + 1}).name
             for key, value in TINY.items()}
    assert len(names) == len(TINY) and config.name not in names


def test_tfds_splits_features_and_labels(synthetic_faces, tiny_data_dir):
    datasets = synthetic_faces.load_synthetic_faces(tiny_data_dir, **TINY)
    assert set(datasets) == {"train", "test"}
    train, test = _examples(datasets, "train"), _examples(datasets, "test")
    assert len(train) == 6 * 3 and len(test) == 5 * 2
    for example in train + test:
        assert example["image"].shape == (16, 16, 3) and example["image"].dtype == np.uint8
        assert example["label"].dtype == np.int64 and example["family"].dtype == np.int64
    assert sorted(e["label"] for e in train) == sorted(list(range(6)) * 3)
    assert sorted(e["label"] for e in test) == sorted(list(range(5)) * 2)


def test_tfds_images_are_the_rendered_ones(synthetic_faces, tiny_data_dir):
    """Lossless round trip; test images come from the held-out identities."""
    datasets = synthetic_faces.load_synthetic_faces(tiny_data_dir, **TINY)
    for split, count, per, offset in [("train", 6, 3, 0), ("test", 5, 2, 6)]:
        rendered = face_renderer.render_split(count, per, 16, seed=3, identity_offset=offset)
        expected = sorted((int(label), int(family), image.tobytes()) for label, family, image
                          in zip(rendered.labels, rendered.families, rendered.images))
        stored = sorted((int(e["label"]), int(e["family"]), e["image"].tobytes())
                        for e in _examples(datasets, split))
        assert stored == expected


def test_tfds_generation_is_deterministic(synthetic_faces, tiny_data_dir, tmp_path):
    first = _examples(synthetic_faces.load_synthetic_faces(tiny_data_dir, **TINY), "train")
    second = _examples(synthetic_faces.load_synthetic_faces(str(tmp_path), **TINY), "train")
    assert [e["image"].tobytes() for e in first] == [e["image"].tobytes() for e in second]
    assert [e["label"] for e in first] == [e["label"] for e in second]


def test_second_load_reuses_the_cache(synthetic_faces, tiny_data_dir, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("cached data set was generated again")

    monkeypatch.setattr(synthetic_faces.SyntheticFaces, "_generate_examples", fail)
    datasets = synthetic_faces.load_synthetic_faces(tiny_data_dir, **TINY)
    assert len(_examples(datasets, "test")) == 10
    # A different setting is a different config, so it would be generated.
    with pytest.raises(Exception, match="generated again"):
        synthetic_faces.load_synthetic_faces(tiny_data_dir, **{**TINY, "seed": 4})


def test_source_train_honours_the_worker_shard(tiny_data_dir):
    """``shard(n, i)`` splits ``train()`` across input workers: disjoint shards that cover the set."""
    from trainer.data.sources.synthetic import SyntheticFacesSource

    def images(source):
        return sorted(image.tobytes() for image, _ in source.train().as_numpy_iterator())

    every = images(SyntheticFacesSource(data_dir=tiny_data_dir, **TINY))
    shards = [images(SyntheticFacesSource(data_dir=tiny_data_dir, **TINY).shard(2, i)) for i in (0, 1)]
    assert len(every) == 18 and all(shards)
    assert sorted(shards[0] + shards[1]) == every
