#!/usr/bin/env bash
# The issue-8 GPU benchmark: iresnet50 + E neck + ArcFace, 112x112, batch 256, 93,431 classes
# (MS1MV3), mixed_bfloat16, JAX backend, random in-memory batches (no data set needed, nothing
# downloaded). Reference on one H100 80GB: arcface_torch 2,273 images/s; minimal Keras 3 + JAX
# step 6,736 images/s. Target: framework >= 6,400 images/s and >= 0.95 x the minimal step.
#
#   bash benchmarks/h100_iresnet50.sh [extra overrides, e.g. bench.callbacks=none]
#
# Writes benchmarks/h100_iresnet50*.json. Expect ~2 XLA compilations of iresnet50 (framework and
# minimal step), 1-3 minutes each, then ~1 minute of timed windows per run.
set -euo pipefail
cd "$(dirname "$0")/.."
export KERAS_BACKEND=jax TF_CPP_MIN_LOG_LEVEL=3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

COMMON=(backbone=iresnet50 neck=e head=cosine loss=arcface loop=supervised optimizer=sgd
        runtime.precision=mixed_bfloat16 runtime.jit_compile=true trainer.batch_size=256
        bench.num_classes=93431 bench.image_size=112 bench.pipeline=false logger=none
        bench.warmup_steps=20 bench.windows=7 bench.steps_per_window=40 bench.peak_tflops=989)

# 1. the framework's path as a job runs it (job callbacks) against the minimal stateless JAX step
python -m trainer.bench "${COMMON[@]}" bench.output=benchmarks/h100_iresnet50.json "$@"
# 2. attribution: the same without the job's callbacks (per-step callback and sync cost)
python -m trainer.bench "${COMMON[@]}" bench.callbacks=none bench.verbose=0 bench.minimal=false \
    bench.output=benchmarks/h100_iresnet50_nocallbacks.json "$@"
