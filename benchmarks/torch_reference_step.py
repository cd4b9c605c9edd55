"""The reference trainer's step, in PyTorch, on the same GPU as the GPU table (images/s).

    python benchmarks/torch_reference_step.py [--depth 50] [--batch 256] [--classes 93431]

The comparison the GPU table is judged by ("facetrain >= 3 x arcface_torch on the same
GPU") needs arcface_torch's number on that GPU, and the machine that has the GPU cannot
download insightface. So this file rebuilds the *shape* of arcface_torch's training step
from the published recipe, written from the architecture spec (docs and
``../shared/reference``), not from its code:

- IResNet (pre-activation blocks, PReLU, no max-pool) and the "E" embedding head
  (BN -> flatten -> dense 25088->512 -> BN with gamma fixed at 1), head in float32;
- fp16 autocast over the backbone, a dynamic loss scaler (GradScaler);
- ArcFace (s=64, m=0.5) over a full class matrix (Partial FC at sample rate 1.0 is the
  same arithmetic), logits in float32;
- gradient norm clipped at 5 over the backbone, SGD (lr 0.1, momentum 0.9, wd 5e-4);
- NCHW tensors, no torch.compile, no CUDA graphs: as the recipe runs.

Batches are random and already on the device (no data loading), as in the GPU table.
Timing: warm-up steps, then windows of steps between two ``torch.cuda.synchronize()``;
the median window gives images/s. Writes a JSON report with ``--output``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch
from torch import nn
import torch.nn.functional as F

BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 200: (6, 26, 60, 6)}
WIDTHS = (64, 128, 256, 512)
BN_EPS = 1e-5


class Block(nn.Module):
    """BN -> conv3x3 -> BN -> PReLU -> conv3x3 (stride s) -> BN, plus the shortcut; no activation after the add."""

    def __init__(self, channels_in: int, channels_out: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(channels_in, eps=BN_EPS),
            nn.Conv2d(channels_in, channels_out, 3, 1, 1, bias=False),
            nn.BatchNorm2d(channels_out, eps=BN_EPS),
            nn.PReLU(channels_out),
            nn.Conv2d(channels_out, channels_out, 3, stride, 1, bias=False),
            nn.BatchNorm2d(channels_out, eps=BN_EPS),
        )
        self.shortcut = nn.Identity()
        if stride != 1 or channels_in != channels_out:
            self.shortcut = nn.Sequential(nn.Conv2d(channels_in, channels_out, 1, stride, bias=False),
                                          nn.BatchNorm2d(channels_out, eps=BN_EPS))

    def forward(self, x):
        return self.body(x) + self.shortcut(x)


class IResNet(nn.Module):
    def __init__(self, depth: int, image_size: int = 112, embedding_dim: int = 512):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64, eps=BN_EPS),
                                  nn.PReLU(64))
        layers, channels = [], 64
        for width, count in zip(WIDTHS, BLOCKS[depth]):
            for index in range(count):
                layers.append(Block(channels, width, 2 if index == 0 else 1))
                channels = width
        self.stages = nn.Sequential(*layers)
        side = image_size // 16
        self.neck_bn = nn.BatchNorm2d(512, eps=BN_EPS)
        self.dense = nn.Linear(512 * side * side, embedding_dim)
        self.features = nn.BatchNorm1d(embedding_dim, eps=BN_EPS)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False

    def forward(self, x):
        x = self.neck_bn(self.stages(self.stem(x)))
        x = torch.flatten(x, 1)
        with torch.autocast("cuda", enabled=False):  # the head runs in float32, as in the recipe
            return self.features(self.dense(x.float()))


def arcface_loss(embeddings, weight, labels, scale=64.0, margin=0.5):
    logits = F.linear(F.normalize(embeddings), F.normalize(weight)).float().clamp(-1, 1)
    target = logits.gather(1, labels[:, None])
    with_margin = torch.cos(torch.acos(target) + margin)
    logits = logits.scatter(1, labels[:, None], with_margin) * scale
    return F.cross_entropy(logits, labels)


def measure(args) -> dict:
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    model = IResNet(args.depth, args.image_size).to(device)
    weight = nn.Parameter(torch.empty(args.classes, 512, device=device).normal_(0, 0.01))
    optimizer = torch.optim.SGD([{"params": [p for p in model.parameters() if p.requires_grad]},
                                 {"params": [weight]}], lr=0.1, momentum=0.9, weight_decay=5e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=args.fp16)
    generator = torch.Generator(device=device).manual_seed(0)
    batches = [((torch.randint(0, 256, (args.batch, 3, args.image_size, args.image_size), device=device,
                               generator=generator).float() - 127.5) / 127.5,
                torch.randint(0, args.classes, (args.batch,), device=device, generator=generator))
               for _ in range(2)]

    def step(images, labels):
        with torch.autocast(device.type, dtype=torch.float16, enabled=args.fp16):
            embeddings = model(images)
            loss = arcface_loss(embeddings, weight, labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        scaler.step(optimizer)
        scaler.update()
        return loss

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def window(steps: int) -> float:
        sync()
        start = time.perf_counter()
        for index in range(steps):
            loss = step(*batches[index % 2])
        sync()
        assert math.isfinite(float(loss.detach())), "the reference step diverged"
        return time.perf_counter() - start

    window(args.warmup)
    seconds = [window(args.steps) for _ in range(args.windows)]
    rates = [args.batch * args.steps / s for s in seconds]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"device": name, "torch": torch.__version__, "depth": args.depth, "batch": args.batch,
            "classes": args.classes, "image_size": args.image_size, "fp16": args.fp16,
            "images_per_second": statistics.median(rates), "window_rates": [round(r, 1) for r in rates],
            "peak_device_gib": (round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
                                if device.type == "cuda" else None)}


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depth", type=int, default=50, choices=sorted(BLOCKS))
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--classes", type=int, default=93_431)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-fp16", dest="fp16", action="store_false", help="float32 throughout")
    parser.add_argument("--output", default=None)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    if args.device == "cpu":
        args.fp16 = False  # fp16 autocast and the grad scaler are CUDA features
    report = measure(args)
    print(f"reference step (PyTorch, arcface_torch's recipe) iresnet{args.depth} batch {args.batch} "
          f"on {report['device']}: {report['images_per_second']:,.1f} images/s "
          f"(windows {report['window_rates']})", flush=True)
    if args.output:
        with open(args.output, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
