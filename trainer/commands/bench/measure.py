"""One benchmark run: build the job's model as the trainer does, then time it three ways.

1. **framework**: the trainer's own path (``loop.compile`` + ``loop.fit`` with
   the job's callbacks, ``Throughput``, the ``metrics.json`` logger and the
   loggers), fed in-memory batches so that only the framework is measured;
2. **minimal**: a hand-written step on a second copy of the same model, loss
   and optimizer (``trainer.bench.minimal_step``), the same batches;
3. **pipeline**: the job's input pipeline alone (decode, cache, shuffle,
   batch, augment), batches pulled and dropped.

Windows of the three are interleaved (``trainer.bench.interleave``), so the
ratios framework/minimal and pipeline/framework compare windows taken under
the same load of a shared machine.
"""

from __future__ import annotations

import itertools
import math
import os
import platform
import shutil
import tempfile
import time

import keras
import numpy as np

from loops.base import FaceLoop
from models.heads import base as heads_base
from trainer.commands.bench import flops as flops_module
from trainer.commands.bench.batches import in_memory_data, random_batches
from trainer.commands.bench.interleave import Interleaver, Runner
from trainer.commands.bench.memory import gib, peak_device_bytes, peak_host_bytes
from trainer.commands.bench.minimal_step import MinimalRunner
from trainer.commands.bench.timing import Windows, paired_ratio, steps_windows

FRAMEWORK_TARGET = 0.95   # framework step >= 0.95 x the minimal step
PIPELINE_TARGET = 3.0     # input pipeline >= 3 x the model step
SETTLE_MAX_SECONDS = 5.0  # after a pipeline window, wait at most this long for tf.data to go quiet


def run_bench(cfg) -> dict:
    """Measure the job ``cfg`` (a composed ``bench`` config) and return the report (a dict)."""
    from trainer.config import validate
    from trainer.job import build_job
    from trainer.registry import ConfigError

    validate(cfg)
    bench = cfg.bench
    windows = int(bench.windows)
    if windows < 1 or int(bench.steps_per_window) < 1:
        raise ConfigError("bench.windows and bench.steps_per_window must be >= 1")
    synthetic = bench.get("num_classes") is not None
    run_dir = tempfile.mkdtemp(prefix="facetrain-bench-")
    try:
        # The same assembly as a training run (trainer.job), measured instead of trained.
        job = build_job(cfg, run_dir, with_source=not synthetic or bool(bench.pipeline),
                        num_classes=int(bench.num_classes) if synthetic else None,
                        image_size=bench.get("image_size") or (None if not synthetic
                                                                else cfg.data.image_size),
                        with_callbacks=bench.callbacks == "job")
        execution = max(int(job.runtime.steps_per_execution), 1)
        # At least two warm-up steps: under JAX the second call of a jitted step compiles again (its
        # inputs are the first call's outputs, placed and sharded differently from the variables).
        report = _measure(cfg, bench, job, synthetic, _round_up(max(int(bench.warmup_steps), 2), execution),
                          _round_up(int(bench.steps_per_window), execution), windows, run_dir)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return report


def _measure(cfg, bench, job, synthetic, warmup_steps, steps_per_window, windows, run_dir) -> dict:
    from trainer import records

    runtime, source, loop, callbacks = job.runtime, job.source, job.loop, job.callbacks
    seed, batch_size, steps_per_epoch, epochs = job.seed, job.batch_size, job.steps_per_epoch, job.epochs
    num_classes = int(bench.num_classes) if synthetic else source.num_classes
    image_size = int(loop.embedding_model.input_shape[1])
    job_callbacks = bench.callbacks == "job"

    def pipeline(epochs_needed):
        return job.batches(0, epochs_needed)

    distinct = max(int(bench.distinct_batches), 1)
    if synthetic:
        batches = random_batches(distinct, batch_size, image_size, num_classes, seed)
    else:  # the pipeline's own first batches: any loop's batch structure, real pixels
        batches = [_to_numpy(b) for b in itertools.islice(_iterate(pipeline(1 + distinct // steps_per_epoch)),
                                                         distinct)]

    results: dict[str, Windows] = {}

    def record(name, seconds, cpu_seconds=None):
        results[name].add(seconds, cpu_seconds)

    runners = []
    results["framework"] = steps_windows(batch_size, steps_per_window)
    if bench.minimal:
        runners.append(MinimalRunner(cfg, runtime, num_classes, image_size, steps_per_epoch, epochs, batches))
        results["minimal"] = steps_windows(batch_size, steps_per_window)
    pipeline_runner = None
    if bench.pipeline and source is not None:
        cached = bool(getattr(source, "fits_in_memory", False))
        per_window = max(int(bench.pipeline_batches), 1)
        needed = warmup_steps + (steps_per_epoch if cached else 0) + windows * 2 * per_window
        pipeline_runner = _PipelineRunner(pipeline(math.ceil(needed / steps_per_epoch) + 1),
                                          first_epoch_steps=steps_per_epoch if cached else 0,
                                          batch_size=batch_size, batches_per_window=per_window)
        # Timed on its own after the step windows, not between them: its tf.data threads and the
        # caches its decoding evicts had cost the step window right after it ~3-5 % on 2 cores
        # (framework / minimal 0.93-0.97 interleaved with it, 0.97-0.99 without).
        results["pipeline"] = Windows(images_per_window=batch_size * per_window,
                                      steps_per_window=per_window)

    traces = {}
    interleaver = Interleaver(warmup_steps, steps_per_window, windows, runners, record,
                              steps_per_execution=max(int(runtime.steps_per_execution), 1),
                              on_warm=lambda: traces.update(after_warmup=tracing_count(loop)))
    extra = []
    if job_callbacks:
        report = records.RunReport(run_dir, cfg)
        loggers = records.loggers(cfg, run_dir)
        extra = [records.Throughput(batch_size), report.epoch_logger(), *loggers.callbacks]
    job.set_position(0, steps_per_epoch=interleaver.total_steps)  # one epoch of the measured steps
    if job.checkpoint is not None:
        job.checkpoint.check_compatible(interleaver.total_steps, batch_size)
    interleaver.fit_started = time.perf_counter()
    try:
        loop.fit(in_memory_data(batches), epochs=1, steps_per_epoch=interleaver.total_steps,
                 callbacks=[interleaver, *callbacks, *extra], shuffle=False,
                 verbose=int(bench.verbose))
        fit_ended = time.perf_counter()
    finally:
        if job_callbacks:
            loggers.close()  # once per job (wandb's finish), not per step or epoch
    closed = time.perf_counter()
    if not interleaver.complete:
        from trainer.registry import ConfigError

        reason = job.stop_reason()
        raise ConfigError(f"training stopped before the benchmark finished"
                          f"{': ' + reason if reason else ''}")

    if pipeline_runner is not None:
        pipeline_runner.warmup(warmup_steps)
        for _ in range(windows):
            cpu = time.process_time()
            record("pipeline", pipeline_runner.window(steps_per_window), time.process_time() - cpu)
    summaries = {name: windows_.summary() for name, windows_ in results.items()}
    if pipeline_runner is not None:
        summaries["pipeline"]["first_epoch_images_per_second"] = pipeline_runner.first_epoch_rate
    ratios = {}
    if "minimal" in results:
        ratios["framework_over_minimal"] = paired_ratio(results["framework"], results["minimal"])
        ratios["framework_over_minimal_cpu_time"] = paired_ratio(results["framework"], results["minimal"],
                                                                 cpu=True)
    if "pipeline" in results:
        ratios["pipeline_over_framework"] = paired_ratio(results["pipeline"], results["framework"])

    flops = flops_module.flops_summary(loop, (image_size, image_size, 3))
    minimal_runner = next((r for r in runners if isinstance(r, MinimalRunner)), None)
    xla = minimal_runner.step.compiled_flops() if minimal_runner is not None else None
    if xla:
        flops["xla_train_flops_per_image"] = int(xla / batch_size)
    peak = bench.get("peak_tflops")
    for name in ("framework", "minimal"):
        rate = summaries.get(name, {}).get("images_per_second")
        if rate:
            achieved = rate * flops["train_flops_per_image"] / 1e12
            summaries[name]["tflops"] = round(achieved, 4)
            if peak:
                summaries[name]["utilisation"] = round(achieved / float(peak), 4)

    framework_step = summaries["framework"].get("step_seconds")
    epoch_end = (interleaver.train_end_started - interleaver.epoch_end_started
                 if interleaver.epoch_end_started and interleaver.train_end_started else None)
    breakdown = None
    if bench.get("breakdown"):
        from trainer.commands.bench.breakdown import measure_breakdown

        breakdown = measure_breakdown(cfg, job, batches, num_classes, image_size, warmup_steps,
                                      steps_per_window, windows, run_dir)
    job = job_description(cfg, runtime, num_classes, image_size, batch_size, steps_per_epoch, synthetic)
    job["parameters"] = int(loop.count_params())
    return {
        "job": job,
        "breakdown": breakdown,
        "bench": {"warmup_steps": warmup_steps, "windows": windows,
                  "steps_per_window": steps_per_window, "distinct_batches": distinct,
                  "pipeline_batches": int(bench.pipeline_batches),
                  "callbacks": str(bench.callbacks), "verbose": int(bench.verbose)},
        "framework": summaries["framework"],
        "minimal": summaries.get("minimal"),
        "pipeline": summaries.get("pipeline"),
        "ratios": ratios,
        "targets": targets(ratios),
        "flops": flops,
        "overheads": {
            "warmup_seconds": round(interleaver.warmup_seconds, 3),
            "epoch_end_seconds": round(epoch_end, 3) if epoch_end is not None else None,
            # the epoch-end work (checkpoint, metrics.json, loggers) as a share of one epoch
            "epoch_end_share": (round(epoch_end / (epoch_end + steps_per_epoch * framework_step), 4)
                                if epoch_end is not None and framework_step else None),
            "train_end_seconds": round(fit_ended - interleaver.train_end_started, 3),
            "loggers_close_seconds": round(closed - fit_ended, 3),
            # TensorFlow traces the step twice at its first call (variable creation); more
            # traces during the windows would mean retracing
            "framework_traces": tracing_count(loop),
            "retraces_during_windows": (tracing_count(loop) - traces["after_warmup"]
                                        if traces.get("after_warmup") is not None else None),
        },
        "memory": {"peak_host_gib": gib(peak_host_bytes()),
                   "peak_device_gib": gib(peak_device_bytes()),
                   "head_per_device": head_memory(loop),
                   "note": "this process: two copies of the model (framework and minimal) and the "
                           "pipeline; bench.job=true measures the job alone"},
        "machine": machine(),
    }


def head_memory(loop) -> dict | None:
    """A sharded head's weights and optimizer slots on one device (``head=partial_fc``), or None."""
    return heads_base.head_memory(loop.head, loop.optimizer) if isinstance(loop, FaceLoop) else None


def targets(ratios: dict) -> dict:
    found = {}
    framework = (ratios.get("framework_over_minimal") or {}).get("median")
    if framework is not None:
        found["framework_over_minimal"] = {"target": FRAMEWORK_TARGET, "met": framework >= FRAMEWORK_TARGET}
    pipeline = (ratios.get("pipeline_over_framework") or {}).get("median")
    if pipeline is not None:
        found["pipeline_over_framework"] = {"target": PIPELINE_TARGET, "met": pipeline >= PIPELINE_TARGET}
    return found


def job_description(cfg, runtime, num_classes, image_size, batch_size, steps_per_epoch, synthetic):
    return {"backend": keras.backend.backend(),
            "backbone": str(cfg.backbone.name), "neck": str(cfg.neck.name),
            "head": str(cfg.head.name) if cfg.get("head") else None,
            "loss": str(cfg.loss.name) if cfg.get("loss") else None, "loop": str(cfg.loop.name),
            "augment": [str(op.name) if hasattr(op, "name") else str(op)
                        for op in ((cfg.get("augment") or {}).get("ops") or [])],
            "image_size": image_size, "batch_size": batch_size, "num_classes": num_classes,
            "steps_per_epoch": steps_per_epoch,
            "precision": keras.mixed_precision.global_policy().name,
            "jit_compile": bool(runtime.jit_compile),
            "steps_per_execution": int(runtime.steps_per_execution),
            "compile_cache": getattr(runtime, "compile_cache", None),  # folder, active, why
            "model_data": "random in-memory batches" if synthetic else "the pipeline's first batches, in memory"}


def machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "cpu": _cpu_model(),
            "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None}
    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            device = jax.local_devices()[0]
            info["device"] = f"{device.platform}: {getattr(device, 'device_kind', '')}".strip()
        elif backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            info["device"] = (tf.config.experimental.get_device_details(gpus[0]).get("device_name", "gpu")
                              if gpus else "cpu")
    except Exception:
        info["device"] = "unknown"
    from trainer.records import git_commit, package_versions

    info["versions"] = package_versions()
    info["git_commit"] = git_commit()
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def tracing_count(loop) -> int | None:
    """How often TensorFlow traced the training step (1 = never retraced), or None (JAX).

    Keras keeps its ``tf.function``s in the closure of ``train_function``; the
    largest trace count among them is reported.
    """
    counts, seen = [], set()

    def visit(function, depth):
        if function is None or id(function) in seen or depth > 4:
            return
        seen.add(id(function))
        counter = getattr(function, "experimental_get_tracing_count", None)
        if counter is not None:
            try:
                counts.append(int(counter()))
            except Exception:
                pass
        for cell in getattr(function, "__closure__", None) or ():
            try:
                visit(cell.cell_contents, depth + 1)
            except ValueError:  # empty cell
                continue

    visit(getattr(loop, "train_function", None), 0)
    return max(counts) if counts else None


# -- batches -------------------------------------------------------------------------

def _iterate(batches):
    if hasattr(batches, "element_spec"):  # tf.data
        return batches.as_numpy_iterator() if keras.backend.backend() != "tensorflow" else iter(batches)
    return iter(batches)


def _to_numpy(batch):
    return keras.tree.map_structure(lambda t: np.asarray(t), batch)


def _round_up(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


# -- the runners: the minimal step between framework windows, the pipeline after them -------

class _PipelineRunner(Runner):
    """Pulls batches from the job's pipeline; the first epoch (decode, cache fill) is warm-up.

    tf.data works ahead into its buffers (prefetch, parallel map) while nobody
    reads, so a window first drains ``batches`` batches untimed, then times
    ``batches`` more: the timed ones had to be produced, not just handed over.
    """

    name = "pipeline"

    def __init__(self, batches, first_epoch_steps: int, batch_size: int, batches_per_window: int):
        self.iterator = _iterate(batches)
        self.first_epoch_steps = first_epoch_steps
        self.batch_size = batch_size
        self.batches_per_window = batches_per_window
        self.first_epoch_rate = None

    def _pull(self, count) -> float:
        start = time.perf_counter()
        for _ in range(int(count)):
            next(self.iterator)
        return time.perf_counter() - start

    def warmup(self, steps):
        count = max(steps, self.first_epoch_steps)
        seconds = self._pull(count)
        if self.first_epoch_steps:
            self.first_epoch_rate = round(count * self.batch_size / seconds, 2)

    def window(self, steps):
        self._pull(self.batches_per_window)  # drain what was buffered in the background
        seconds = self._pull(self.batches_per_window)
        # tf.data refills its buffers in the background after the window; let it finish
        # so that work is not charged to the next window of another measurement (the next one
        # is the framework step's: a fixed pause had left it ~5 % of the refill on 2 cores)
        wait_until_quiet(SETTLE_MAX_SECONDS)
        return seconds


def wait_until_quiet(max_seconds: float, interval: float = 0.05, busy_share: float = 0.05) -> float:
    """Sleep until this process's threads use under ``busy_share`` of one core over an
    ``interval`` (two intervals in a row), or ``max_seconds`` passed; returns the seconds waited.
    The process's CPU time counts every thread, so tf.data's background work shows in it."""
    start = time.perf_counter()
    quiet = 0
    while time.perf_counter() - start < max_seconds and quiet < 2:
        cpu, wall = time.process_time(), time.perf_counter()
        time.sleep(interval)
        share = (time.process_time() - cpu) / max(time.perf_counter() - wall, 1e-9)
        quiet = quiet + 1 if share < busy_share else 0
    return time.perf_counter() - start
