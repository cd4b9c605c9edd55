"""Regenerate the pytorch-metric-learning golden files for the loss tests (run offline).

    pip install torch==2.13.0 pytorch-metric-learning==2.9.0
    python scripts/make_loss_goldens.py            # writes tests/golden/pml_2.9.0.{npz,json}

Each case stores seeded inputs, pytorch-metric-learning's loss and its gradient
with respect to the embeddings, computed in float64. The JSON maps every case to
the facetrain loss config that must reproduce it. CI reads these files only.
Pitfall handled here: pytorch-metric-learning's ArcFace margin is in degrees.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytorch_metric_learning
import torch
from pytorch_metric_learning import losses, miners

OUT = pathlib.Path(__file__).resolve().parents[1] / "tests" / "golden"
ARC_MARGIN = 0.5  # radians in facetrain; pytorch-metric-learning wants degrees


def margin_case(rng, loss_cls, sub_centers=1, **kwargs):
    """Embeddings (2 of them near -w_y, so ArcFace's fallback branch is hit) and class weights."""
    batch, dim, classes = 8, 6, 5
    labels = rng.integers(0, classes, batch)
    weights = rng.normal(size=(dim, classes * sub_centers))
    x = rng.normal(size=(batch, dim)) * 3.0
    for i in (0, 1):  # target angle beyond pi - m
        w = weights[:, labels[i] * sub_centers: (labels[i] + 1) * sub_centers].mean(axis=1)
        x[i] = -w / np.linalg.norm(w) * 4.0 + 0.05 * rng.normal(size=dim)
    extra = {"sub_centers": sub_centers} if sub_centers > 1 else {}
    loss = loss_cls(num_classes=classes, embedding_size=dim, **extra, **kwargs).double()
    loss.W.data = torch.tensor(weights, dtype=torch.float64)
    return x, labels, loss, {"weights": weights}


def run(loss, x, labels, miner=None):
    embeddings = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    target = torch.tensor(labels)
    mined = miner(embeddings, target) if miner is not None else None
    value = loss(embeddings, target, mined) if mined is not None else loss(embeddings, target)
    value.backward()
    return float(value.detach()), embeddings.grad.numpy()


def pk_batch(rng, identities=4, per_identity=3, dim=6):
    labels = np.repeat(np.arange(identities), per_identity)
    rng.shuffle(labels)
    centres = rng.normal(size=(identities, dim))
    return centres[labels] + 0.9 * rng.normal(size=(len(labels), dim)), labels


def main():
    rng = np.random.default_rng(20250101)
    arrays, cases = {}, {}

    def store(case, facetrain_config, pml, x, labels, value, grad, **extra):
        arrays[f"{case}/embeddings"] = x
        arrays[f"{case}/labels"] = labels
        arrays[f"{case}/loss"] = np.array(value)
        arrays[f"{case}/grad"] = grad
        for key, array in extra.items():
            arrays[f"{case}/{key}"] = array
        cases[case] = {"facetrain": facetrain_config, "pytorch_metric_learning": pml}

    x, labels, loss, extra = margin_case(rng, losses.ArcFaceLoss, margin=np.degrees(ARC_MARGIN), scale=64)
    store("arcface", {"name": "arcface", "scale": 64.0, "margin": ARC_MARGIN},
          f"ArcFaceLoss(margin={np.degrees(ARC_MARGIN)} degrees, scale=64)", x, labels, *run(loss, x, labels), **extra)

    x, labels, loss, extra = margin_case(rng, losses.CosFaceLoss, margin=0.35, scale=64)
    store("cosface", {"name": "cosface", "scale": 64.0, "margin": 0.35},
          "CosFaceLoss(margin=0.35, scale=64)", x, labels, *run(loss, x, labels), **extra)

    x, labels, loss, extra = margin_case(rng, losses.SubCenterArcFaceLoss, sub_centers=3,
                                         margin=np.degrees(ARC_MARGIN), scale=64)
    store("subcenter_arcface", {"name": "subcenter_arcface", "scale": 64.0, "margin": ARC_MARGIN,
                                "sub_centers": 3},
          f"SubCenterArcFaceLoss(sub_centers=3, margin={np.degrees(ARC_MARGIN)} degrees, scale=64)",
          x, labels, *run(loss, x, labels), **extra)

    base = rng.normal(size=(5, 6))
    views = np.concatenate([base + 0.5 * rng.normal(size=base.shape), base + 0.5 * rng.normal(size=base.shape)])
    ids = np.concatenate([np.arange(5), np.arange(5)])
    store("ntxent", {"name": "ntxent", "temperature": 0.1}, "NTXentLoss(temperature=0.1), labels = sample ids",
          views, ids, *run(losses.NTXentLoss(temperature=0.1), views, ids))

    x, labels = pk_batch(rng)
    store("supcon", {"name": "supcon", "temperature": 0.1}, "SupConLoss(temperature=0.1)",
          x, labels, *run(losses.SupConLoss(temperature=0.1), x, labels))

    x, labels = pk_batch(rng)
    store("contrastive", {"name": "contrastive", "pos_margin": 0.0, "neg_margin": 1.0},
          "ContrastiveLoss(pos_margin=0, neg_margin=1)",
          x, labels, *run(losses.ContrastiveLoss(pos_margin=0, neg_margin=1), x, labels))

    x, labels = pk_batch(rng)
    store("triplet_batch_all", {"name": "triplet", "margin": 0.2, "mining": "batch_all"},
          "TripletMarginLoss(margin=0.2), no miner (all triplets, mean over non-zero)",
          x, labels, *run(losses.TripletMarginLoss(margin=0.2), x, labels))

    # Margin 1.0: every hardest triplet then has a positive loss, so pytorch-metric-
    # learning's mean over non-zero triplets equals Hermans et al.'s mean over anchors.
    x, labels = pk_batch(rng)
    miner = miners.BatchHardMiner()
    mined = miner(torch.tensor(x), torch.tensor(labels))
    d = torch.cdist(torch.nn.functional.normalize(torch.tensor(x)), torch.nn.functional.normalize(torch.tensor(x)))
    assert bool(torch.all(d[mined[0], mined[1]] - d[mined[0], mined[2]] + 1.0 > 0))
    store("triplet_batch_hard", {"name": "triplet", "margin": 1.0, "mining": "batch_hard"},
          "BatchHardMiner() + TripletMarginLoss(margin=1.0)",
          x, labels, *run(losses.TripletMarginLoss(margin=1.0), x, labels, miner))

    x, labels = pk_batch(rng, identities=4, per_identity=4)
    store("triplet_semi_hard", {"name": "triplet", "margin": 0.2, "mining": "semi_hard"},
          "TripletMarginMiner(margin=0.2, type_of_triplets='semihard') + TripletMarginLoss(margin=0.2)",
          x, labels, *run(losses.TripletMarginLoss(margin=0.2), x, labels,
                          miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")))

    x, labels = pk_batch(rng)
    store("multi_similarity", {"name": "multi_similarity", "alpha": 2.0, "beta": 50.0, "base": 0.5,
                               "epsilon": 0.1, "mining": True},
          "MultiSimilarityMiner(epsilon=0.1) + MultiSimilarityLoss(alpha=2, beta=50, base=0.5)",
          x, labels, *run(losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5), x, labels,
                          miners.MultiSimilarityMiner(epsilon=0.1)))

    x, labels = pk_batch(rng)
    store("circle", {"name": "circle", "margin": 0.4, "gamma": 80.0}, "CircleLoss(m=0.4, gamma=80)",
          x, labels, *run(losses.CircleLoss(m=0.4, gamma=80), x, labels))

    OUT.mkdir(parents=True, exist_ok=True)
    np.savez(OUT / "pml_2.9.0.npz", **arrays)
    meta = {"generator": "scripts/make_loss_goldens.py", "dtype": "float64",
            "pytorch_metric_learning": pytorch_metric_learning.__version__, "torch": torch.__version__,
            "cases": cases}
    (OUT / "pml_2.9.0.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {len(cases)} cases to {OUT}")


if __name__ == "__main__":
    main()
