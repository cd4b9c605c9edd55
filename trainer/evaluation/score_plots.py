"""Score histograms: how far apart a model puts one person's pairs and two people's pairs.

The ROC says how well the two distributions separate; the histograms show where
they lie, how wide they are and where the chosen threshold cuts them, which is
what a person tuning a threshold wants to see. One panel per verification set,
cosine similarity on the x axis (positives green, negatives red).
"""

from __future__ import annotations

import os

import numpy as np


def plot_score_histograms(scored: dict, path: str, thresholds: dict | None = None) -> str:
    """Write a PNG of ``{name: ScoredPairs}`` histograms (one panel each); returns ``path``.

    ``thresholds`` maps a set's name to its verification threshold (a squared distance),
    drawn as a line at the cosine it stands for.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(scored)
    figure, axes = plt.subplots(len(names), 1, figsize=(5, 2.6 * len(names)), dpi=100, squeeze=False)
    bins = np.linspace(-1.0, 1.0, 81)
    for axis, name in zip(axes[:, 0], names):
        cosines, issame = scored[name].cosines(), np.asarray(scored[name].issame, bool)
        axis.hist(cosines[issame], bins=bins, alpha=0.6, color="tab:green", label=f"same person ({issame.sum()})")
        axis.hist(cosines[~issame], bins=bins, alpha=0.6, color="tab:red",
                  label=f"different people ({(~issame).sum()})")
        threshold = (thresholds or {}).get(name)
        if threshold is not None:
            axis.axvline(1.0 - float(threshold) / 2.0, color="black", linestyle="--", linewidth=1,
                         label="threshold")
        axis.set_title(name, fontsize=10)
        axis.set_xlabel("cosine similarity")
        axis.set_ylabel("pairs")
        axis.legend(loc="upper left", fontsize=7)
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
