"""The GPU table: facetrain's step against the minimal Keras-JAX step, then Partial FC, on one device.

    KERAS_BACKEND=jax python benchmarks/gpu_table.py [--peak-tflops 989] [--output FILE]

Rows (each one ``trainer.bench`` measurement, in one process):

    cosine      iresnet50 + E neck + ArcFace, full softmax over --classes; the framework
                step (``fit`` with the job's callbacks) and the minimal stateless JAX step
                on the same batches, in interleaved windows
    pfc 1.0     head=partial_fc, sample_rate 1.0 (exact), --classes
    pfc 0.1     head=partial_fc, sample_rate 0.1, --classes
    pfc 0.1 2M  head=partial_fc, sample_rate 0.1, --large-classes

Defaults are the reference job: iresnet50, 112 px, batch 256, 93,431 classes (MS1MV3),
mixed_bfloat16, SGD, random in-memory batches (no data set, nothing read from disk).
It runs on a machine without TensorFlow: the bench's JAX path builds the job from
in-memory batches and imports TensorFlow only where it is installed.

MFU = achieved FLOP/s / the device's dense bf16 peak. Achieved FLOP/s = images/s x the
bench's training FLOPs per image (convolutions and matmuls of the traced forward pass,
x 3 for the backward pass); a Partial FC head is not in the traced forward pass, so
its sampled matmul (classes x sample_rate x embedding_dim MACs per image) is added.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Dense bf16 tensor-core peak (TFLOP/s, no sparsity), by device name as JAX reports it
# (device_kind); the first entry contained in the name wins.
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("GH200", 989.0),
    ("H200", 989.0),
    ("H100", 989.0),   # SXM
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
)


def peak_tflops(device_name: str) -> float | None:
    for key, value in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return value
    return None


def rows(args) -> list[dict]:
    """The measurements of the table: (label, overrides)."""
    partial = ["head=partial_fc", "bench.minimal=false"]
    found = [
        {"label": "cosine (full softmax)", "classes": args.classes, "sample_rate": None, "overrides": []},
        {"label": "partial_fc 1.0", "classes": args.classes, "sample_rate": 1.0,
         "overrides": [*partial, "head.sample_rate=1.0"]},
        {"label": "partial_fc 0.1", "classes": args.classes, "sample_rate": 0.1,
         "overrides": [*partial, "head.sample_rate=0.1"]},
        {"label": f"partial_fc 0.1, {args.large_classes:,} classes", "classes": args.large_classes,
         "sample_rate": 0.1, "overrides": [*partial, "head.sample_rate=0.1"]},
    ]
    return [row for index, row in enumerate(found) if str(index + 1) in args.rows.split(",")]


def common_overrides(args, classes: int) -> list[str]:
    return [f"backbone={args.backbone}", f"neck={args.neck}", "head=cosine", "loss=arcface", "loop=supervised",
            "optimizer=sgd", "runtime=jax", f"runtime.precision={args.precision}", "runtime.jit_compile=true",
            "data=memory", "logger=none",
            # epoch-end saves only: a time-based save must not land inside a timed window
            "callbacks.checkpoint.every_seconds=0",
            f"trainer.batch_size={args.batch}", f"bench.num_classes={classes}",
            f"bench.image_size={args.image_size}", "bench.pipeline=false", "bench.verbose=0",
            f"bench.warmup_steps={args.warmup}", f"bench.windows={args.windows}",
            f"bench.steps_per_window={args.steps}"]


def head_train_flops_per_image(row: dict, embedding_dim: int) -> float:
    """The sampled classifier's matmul (2 FLOPs per MAC, x 3 for training); 0 for the cosine head,
    whose matmul is already in the traced forward pass."""
    if row["sample_rate"] is None:
        return 0.0
    return 2 * 3 * math.ceil(row["classes"] * row["sample_rate"]) * embedding_dim


def measure(args, row: dict, peak: float | None) -> dict:
    from trainer.commands.bench.measure import run_bench
    from trainer.config import compose

    cfg = compose([*common_overrides(args, row["classes"]), *row["overrides"], *args.set],
                  config_name="bench")
    report = run_bench(cfg)
    embedding_dim = int(cfg.neck.get("embedding_dim") or 512)
    flops = report["flops"]["train_flops_per_image"] + head_train_flops_per_image(row, embedding_dim)
    framework = report["framework"]["images_per_second"]
    minimal = (report.get("minimal") or {}).get("images_per_second")
    ratio = (report["ratios"].get("framework_over_minimal") or {}).get("median")
    tflops = framework * flops / 1e12 if framework else None
    return {"label": row["label"], "classes": row["classes"], "sample_rate": row["sample_rate"],
            "images_per_second": framework, "minimal_images_per_second": minimal,
            "framework_over_minimal": ratio, "train_gflops_per_image": round(flops / 1e9, 4),
            "tflops": round(tflops, 3) if tflops is not None else None,
            "mfu": round(tflops / peak, 4) if tflops is not None and peak else None,
            "peak_device_gib": report["memory"].get("peak_device_gib"),
            "spread": report["framework"].get("spread")}


def failed_row(row: dict) -> dict:
    return {"label": row["label"], "classes": row["classes"], "sample_rate": row["sample_rate"],
            "images_per_second": None, "minimal_images_per_second": None, "framework_over_minimal": None,
            "train_gflops_per_image": None, "tflops": None, "mfu": None, "peak_device_gib": None,
            "spread": None}


def table_lines(device: str, peak: float | None, results: list[dict]) -> list[str]:
    lines = [f"device: {device}; bf16 dense peak: {f'{peak:g} TFLOP/s' if peak else 'unknown (--peak-tflops)'}",
             f"{'row':<34}{'images/s':>11}{'minimal':>11}{'fw/min':>8}{'GFLOP/img':>11}{'TFLOP/s':>10}{'MFU':>8}"]
    for r in results:
        def number(value, fmt):
            return format(value, fmt) if value is not None else "-"
        lines.append(f"{r['label']:<34}{number(r['images_per_second'], ',.1f'):>11}"
                     f"{number(r['minimal_images_per_second'], ',.1f'):>11}"
                     f"{number(r['framework_over_minimal'], '.3f'):>8}{number(r['train_gflops_per_image'], '.3f'):>11}"
                     f"{number(r['tflops'], '.2f'):>10}{number(r['mfu'], '.1%'):>8}")
    return lines


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="iresnet50")
    parser.add_argument("--neck", default="e")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--classes", type=int, default=93_431)
    parser.add_argument("--large-classes", type=int, default=2_000_000)
    parser.add_argument("--precision", default="mixed_bfloat16")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30, help="training steps per timed window")
    parser.add_argument("--rows", default="1,2,3,4", help="which rows, e.g. 1,3")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's dense peak for the precision; default: looked up by device name")
    parser.add_argument("--output", default="benchmarks/gpu_table.json")
    parser.add_argument("--set", nargs="*", default=[], help="more config overrides for every row")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    import jax

    device = jax.devices()[0]
    device_name = f"{device.platform}: {getattr(device, 'device_kind', '')}"
    peak = args.peak_tflops or peak_tflops(device_name)
    folder = os.path.dirname(args.output)
    if folder:
        os.makedirs(folder, exist_ok=True)
    results = []
    for row in rows(args):
        try:
            results.append(measure(args, row, peak))
        except Exception as error:  # e.g. out of device memory at 2M classes: record it, go on
            print(f"{row['label']}: failed: {type(error).__name__}: {str(error).splitlines()[0][:300]}",
                  flush=True)
            results.append({**failed_row(row), "error": f"{type(error).__name__}: {str(error)[:2000]}"})
        print("\n".join(table_lines(device_name, peak, results)[-1:]), flush=True)
        # rewritten after every row: a run cut off by a time limit keeps the rows it finished
        write_report(args, argv, device_name, peak, results)
    print("\n".join(table_lines(device_name, peak, results)))
    print(f"report: {args.output}")
    return 1 if any(r.get("error") for r in results) else 0


def write_report(args, argv, device_name: str, peak: float | None, results: list[dict]) -> None:
    temporary = f"{args.output}.{os.getpid()}.tmp"
    with open(temporary, "w") as f:
        json.dump({"device": device_name, "peak_tflops": peak, "backend": os.environ["KERAS_BACKEND"],
                   "command": " ".join(["python benchmarks/gpu_table.py", *(argv or sys.argv[1:])]),
                   "rows": results}, f, indent=2)
    os.replace(temporary, args.output)


if __name__ == "__main__":
    sys.exit(main())
