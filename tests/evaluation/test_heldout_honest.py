"""Held-out numbers a user can trust: distinct pairs, what they stand on, a weak estimate said so,
and ``trainer.evaluate folder=`` warning about people the model was trained on."""

import json

import numpy as np
import pytest

import trainer
from trainer.data.sources.holdout import auto_count, weak_estimate_line
from trainer.evaluation import verification as v


def write_people(root, identities=20, images=8, size=16, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(identities):
        folder = root / f"person_{i:02d}"
        folder.mkdir(parents=True)
        for j in range(images):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{j}.png")
    return root


def as_sets(index_a, index_b):
    return [frozenset(p) for p in zip(index_a.tolist(), index_b.tolist())]


@pytest.mark.parametrize("wanted", [10, 56, 500])
def test_pairs_are_distinct_and_all_are_used_when_too_few(wanted):
    labels = np.repeat([0, 1], 8)  # 2 × C(8, 2) = 56 positive pairs, 64 negative pairs
    a, b, issame = v.sample_pairs(labels, wanted, seed=1)
    pairs = as_sets(a, b)
    assert len(set(pairs)) == len(pairs) and all(len(p) == 2 for p in pairs)
    assert issame.sum() == (~issame).sum() == min(wanted, 56)
    assert all((labels[x] == labels[y]) == same for x, y, same in zip(a, b, issame))
    counts = v.pair_counts(labels, issame, wanted)
    assert counts["available_positive_pairs"] == 56 and counts["available_negative_pairs"] == 64
    assert ("note" in counts) == (wanted > 56)
    assert (a, b, issame) is not None and np.array_equal(v.sample_pairs(labels, wanted, seed=1)[0], a)


def test_rejection_sampling_path_is_distinct_too():
    labels = np.repeat(np.arange(40), 30)  # far more pairs than asked for
    a, b, issame = v.sample_pairs(labels, 3000, seed=0)
    assert len(set(as_sets(a, b))) == 6000 and issame.sum() == 3000


def test_auto_holdout_and_the_weak_estimate_line():
    assert auto_count(20) == 5 and auto_count(200) == 20 and auto_count(5000) == 100
    line = weak_estimate_line(np.repeat(np.arange(5), 8), 15, "data.holdout=auto")
    assert line.startswith("note: data.holdout=auto holds out 5 identities (40 images: 140 distinct positive")
    assert weak_estimate_line(np.repeat(np.arange(40), 8), 400, "data.holdout=auto") is None


@pytest.mark.e2e
def test_twenty_people_with_eight_photos(tmp_path, capsys):
    """The issue's user: data=folder, 20 × 8 photos, the default holdout."""
    from trainer.data.sources.folder import FolderSource
    from trainer.data.pipeline import materialise
    from trainer.evaluation.suite import evaluate
    from trainer.run import train

    people = write_people(tmp_path / "people")
    run_dir = tmp_path / "run"
    cfg = trainer.compose(["debug=smoke", "logger=none", "callbacks=none", "neck.embedding_dim=16",
                           "data=folder", f"data.path={people}", "eval.pairs=3000", f"run.dir={run_dir}"])
    metrics = train(cfg)
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    weak = [line for line in lines if "weak estimate" in line]
    first_epoch = next(i for i, line in enumerate(lines) if line.startswith("epoch "))
    assert len(weak) == 1 and lines.index(weak[0]) < first_epoch, printed
    assert "holds out 5 identities (40 images: 140 distinct positive and 640 negative pairs)" in weak[0]
    final = metrics["final"]["verification"]
    assert (final["identities"], final["images"]) == (5, 40)
    assert final["positive_pairs"] == final["negative_pairs"] == 140 and final["pairs"] == 280
    assert "fewer than the 3000 asked for" in final["note"]
    assert "on 280 pairs (140 positive + 140 negative, each distinct) from 5 identities, 40 images" in printed
    recorded = json.loads((run_dir / "metrics.json").read_text())["final"]["verification"]
    assert recorded["positive_pairs"] == 140 and recorded["identities"] == 5

    # The pairs the run scored: every one distinct.
    source = FolderSource(path=str(people), image_size=32)
    _, labels = materialise(source.heldout())
    a, b, _ = v.sample_pairs(labels, 3000, seed=0)
    assert len(set(as_sets(a, b))) == len(a) == 280

    # The run folder names its training people; evaluating on them is warned about.
    identities = json.loads((run_dir / "identities.json").read_text())
    assert len(identities["training"]) == 15 and len(identities["heldout"]) == 5
    model_path = run_dir / "export" / "embedding.keras"
    report = evaluate({"model_path": str(model_path), "folder": str(people), "pairs": 50,
                       "output": str(tmp_path / "eval")})  # what trainer.evaluate folder=... runs
    printed = capsys.readouterr().out
    assert "warning: 15 of the 20 identities in" in printed and "flatter the model" in printed
    assert "flatter the model" in report["verification"]["people"]["warning"]
