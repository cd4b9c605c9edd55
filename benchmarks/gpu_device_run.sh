#!/usr/bin/env bash
# One call on a GPU machine that has JAX and PyTorch but no TensorFlow (docs/performance.md,
# "The GPU table"): the reference trainer's step in PyTorch, then the GPU table under JAX, then,
# in whatever time is left, the framework step's cost breakdown at the table's first row.
#
#   bash benchmarks/gpu_device_run.sh OUTPUT_FOLDER [SECONDS]
#
# SECONDS (default 540) bounds the whole script; each part runs under what is left, and every
# part writes its JSON report as it goes, so a cut-off run keeps what it finished.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:?output folder}"
budget="${2:-540}"
mkdir -p "$out"
end=$(( $(date +%s) + budget ))
left() { echo $(( end - $(date +%s) )); }
export KERAS_BACKEND=jax TF_CPP_MIN_LOG_LEVEL=3 PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || true
python3 -c "import jax, keras; print('jax', jax.__version__, jax.devices(), 'keras', keras.__version__)"

# 1. arcface_torch's step (fp16 autocast, grad scaler, clip 5, SGD) in PyTorch, iresnet50, batch 256
timeout "$(left)" python3 benchmarks/torch_reference_step.py --output "$out/torch_reference.json"
# 2. the GPU table: facetrain against the minimal Keras-JAX step, then Partial FC at 1.0, 0.1, 2M classes
timeout "$(left)" python3 benchmarks/gpu_table.py --output "$out/gpu_table.json"
# 3. what each optional part of the step costs, at the table's first row (one compilation per part)
if [ "$(left)" -gt 120 ]; then
  timeout "$(left)" python3 -m trainer.bench backbone=iresnet50 neck=e head=cosine loss=arcface \
      loop=supervised optimizer=sgd runtime=jax runtime.precision=mixed_bfloat16 runtime.jit_compile=true \
      data=memory logger=none callbacks.checkpoint.every_seconds=0 trainer.batch_size=256 \
      bench.num_classes=93431 bench.image_size=112 bench.pipeline=false bench.verbose=0 \
      bench.warmup_steps=10 bench.windows=3 bench.steps_per_window=20 bench.breakdown=true \
      bench.output="$out/gpu_breakdown.json"
fi
