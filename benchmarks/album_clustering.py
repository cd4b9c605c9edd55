"""Time album clustering of one large family (``trainer.evaluation.album.agglomerative``).

    python benchmarks/album_clustering.py [--photos 1600] [--people 40] [--dim 512] [--repeats 5]

Photos are unit vectors scattered around one centre per person, so the clustering does real
merging work. Prints the median wall time of each linkage, from scratch and incrementally
(half the photos already in albums), and the clusters found.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from trainer.evaluation.album import LINKAGES, agglomerative


def family(photos: int, people: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    person = rng.integers(0, people, photos)
    centres = rng.normal(size=(people, dim))
    embeddings = centres[person] + rng.normal(size=(photos, dim)) * 0.8
    return embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True), person


def median_seconds(function, repeats: int) -> tuple[float, np.ndarray]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=1600)
    parser.add_argument("--people", type=int, default=40)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    embeddings, _ = family(args.photos, args.people, args.dim)
    half = args.photos // 2
    print(f"{args.photos} photos, {args.people} people, {args.dim}-d, threshold {args.threshold}, "
          f"median of {args.repeats}")
    for linkage in LINKAGES:
        seconds, labels = median_seconds(lambda: agglomerative(embeddings, args.threshold, linkage), args.repeats)
        albums = agglomerative(embeddings[:half], args.threshold, linkage)
        initial = np.concatenate([albums, np.full(args.photos - half, -1)])
        grown_seconds, grown = median_seconds(
            lambda: agglomerative(embeddings, args.threshold, linkage, initial=initial), args.repeats)
        print(f"{linkage:>8}: from scratch {seconds:.3f} s ({labels.max() + 1} clusters), "
              f"incremental {grown_seconds:.3f} s ({grown.max() + 1} clusters)")


if __name__ == "__main__":
    main()
