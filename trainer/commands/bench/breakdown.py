"""What each optional part of the framework's step costs (``bench.breakdown=true``).

The job is built once as configured (``full``) and once more per switch
(``trainer.bench.switches``) with that one part off; the minimal step is the
floor. Every variant is timed the same way: a short ``fit`` per window (one
lead-in step, then ``steps_per_window`` timed steps between two
``on_train_batch_begin`` boundaries), so ``fit``'s start and the epoch end are
outside the window and every per-step cost (data iteration, the compiled step,
each callback's batch hooks) is inside. Windows of all variants and the minimal
step take turns round by round, each round in a rotated order, so the slow drifts
of a shared machine fall on all of them alike; ratios are medians of per-round
ratios (``timing.paired_ratio``).

A part's cost is ``1 - full / switched_off``: the share of the full step's time
that goes away without it (negative within noise).
"""

from __future__ import annotations

import contextlib
import os
import time

import keras

from trainer.commands.bench.timing import paired_ratio, steps_windows
from trainer.keras_private import unsynced_model
from trainer.timings import wait_for_device


class _WindowClock(keras.callbacks.Callback):
    """Seconds (wall and process CPU) from batch ``start`` to batch ``stop``, at batch begins."""

    def __init__(self, start: int, stop: int):
        super().__init__()
        self.start, self.stop = start, stop
        self.seconds = self.cpu_seconds = None
        self._begin = None

    def on_train_batch_begin(self, batch, logs=None):
        if batch not in (self.start, self.stop):
            return
        wait_for_device(unsynced_model(self))
        now = (time.perf_counter(), time.process_time())
        if batch == self.start:
            self._begin = now
        else:
            self.seconds, self.cpu_seconds = now[0] - self._begin[0], now[1] - self._begin[1]


class FitRunner:
    """One variant of the framework step, timed inside its own short ``fit`` per window."""

    def __init__(self, name, job, data, callbacks, during_run, verbose, execution):
        self.name, self.job, self.data = name, job, data
        self.callbacks, self.during_run = callbacks, during_run
        self.verbose, self.execution = verbose, execution

    def _fit(self, steps: int) -> tuple[float, float]:
        lead = self.execution  # the first execution of a fit carries its own start-up
        total = lead + steps + self.execution
        clock = _WindowClock(lead, lead + steps)
        self.job.set_position(0, steps_per_epoch=total)
        with self.during_run():
            self.job.loop.fit(self.data, epochs=1, steps_per_epoch=total, shuffle=False,
                              callbacks=[clock, *self.callbacks], verbose=self.verbose)
        reason = self.job.stop_reason()
        if reason is not None or clock.seconds is None:
            from trainer.registry import ConfigError

            raise ConfigError(f"bench.breakdown: the '{self.name}' variant stopped early"
                              f"{': ' + reason if reason else ''}")
        return clock.seconds, clock.cpu_seconds

    def warmup(self, steps):
        self._fit(max(int(steps), self.execution))

    def window(self, steps):
        return self._fit(steps)


class _MinimalWindows:
    """The minimal step in the same (seconds, cpu_seconds) shape."""

    name = "minimal"

    def __init__(self, runner):
        self.runner = runner

    def warmup(self, steps):
        self.runner.warmup(steps)

    def window(self, steps):
        cpu = time.process_time()
        seconds = self.runner.window(steps)
        return seconds, time.process_time() - cpu


def measure_breakdown(cfg, job, batches, num_classes, image_size, warmup_steps, steps_per_window,
                      windows, run_dir) -> dict:
    """Step time with each optional part off in turn, against the full step and the minimal one."""
    from trainer import records
    from trainer.commands.bench.batches import in_memory_data
    from trainer.commands.bench.minimal_step import MinimalRunner
    from trainer.commands.bench.switches import SWITCHES, switched_config
    from trainer.job import build_job

    bench = cfg.bench
    execution = max(int(job.runtime.steps_per_execution), 1)
    verbose = int(bench.verbose)
    extra = []
    loggers = None
    if bench.callbacks == "job":  # one set, shared by the variants that keep them (one wandb run)
        report = records.RunReport(os.path.join(run_dir, "breakdown"), cfg)
        loggers = records.loggers(cfg, os.path.join(run_dir, "breakdown"))
        extra = [records.Throughput(job.batch_size), report.epoch_logger(), *loggers.callbacks]

    def variant(name, variant_cfg, switch=None):
        folder = os.path.join(run_dir, "breakdown", name)
        with (switch.during_build() if switch else contextlib.nullcontext()):
            built = build_job(variant_cfg, folder, with_source=False, num_classes=num_classes,
                              image_size=image_size, steps_per_epoch=job.steps_per_epoch,
                              with_callbacks=bench.callbacks == "job")
        if switch is not None:
            switch.after_build(built.loop)
        keeps_extras = switch.extras if switch is not None else True
        return FitRunner(name, built, in_memory_data(batches),
                         [*built.callbacks, *(extra if keeps_extras else [])],
                         switch.during_run if switch else contextlib.nullcontext, verbose, execution)

    runners = [variant("full", cfg)]
    skipped = {}
    for switch in SWITCHES:
        problem = switch.problem(cfg, runners[0].job.loop)
        if problem:
            skipped[switch.name] = problem
            continue
        runners.append(variant(switch.name, switched_config(cfg, switch), switch))
    # The full step once more, built last: its distance from ``full`` is the method's own bias
    # (build order, position in the rounds), the yardstick for every part's cost.
    runners.append(variant("full_again", cfg))
    runners.append(_MinimalWindows(MinimalRunner(cfg, job.runtime, num_classes, image_size,
                                                 job.steps_per_epoch, job.epochs, batches)))
    results = {runner.name: steps_windows(job.batch_size, steps_per_window) for runner in runners}
    try:
        for runner in runners:
            runner.warmup(warmup_steps)
        for round_ in range(windows):
            shift = round_ % len(runners)
            for runner in runners[shift:] + runners[:shift]:
                results[runner.name].add(*runner.window(steps_per_window))
    finally:
        if loggers is not None:
            loggers.close()
    return breakdown_report(results, skipped, {s.name: s.what for s in SWITCHES})


def breakdown_report(results: dict, skipped: dict, descriptions: dict) -> dict:
    full, minimal = results["full"], results.get("minimal")
    rows = []
    for name, windows_ in results.items():
        if name == "minimal":
            continue
        summary = windows_.summary()
        over_full = paired_ratio(windows_, full) if name != "full" else None
        rows.append({"switched_off": name if name != "full" else None,
                     "what": descriptions.get(name, "nothing: the full framework step"
                                         + (", built again last (control)" if name == "full_again" else "")),
                     "images_per_second": summary["images_per_second"],
                     "step_seconds": summary["step_seconds"],
                     "over_full": over_full,
                     "over_minimal": paired_ratio(windows_, minimal) if minimal else None,
                     # the share of the full step's time that goes without this part
                     "part_cost": round(1 - 1 / over_full["median"], 4) if over_full else None,
                     "window_images_per_second": summary.get("window_images_per_second")})
    return {"rows": rows, "minimal": minimal.summary() if minimal else None,
            "not_applicable": skipped,
            "method": "one short fit per window and variant, rounds in rotated order; ratios are "
                      "medians of per-round ratios; part_cost = 1 - full / switched off"}


def breakdown_lines(breakdown: dict) -> list[str]:
    """The console table."""
    lines = ["cost breakdown (step with one part switched off; ratios of images/s, medians of rounds):",
             f"  {'switched off':<16}{'images/s':>10}{'vs full':>10}{'vs minimal':>12}{'part cost':>11}"]
    for row in breakdown["rows"]:
        name = row["switched_off"] or "nothing (full)"
        if name == "full_again":
            name = "nothing (again)"
        over_full = f"{row['over_full']['median']:.3f}" if row["over_full"] else "1"
        over_minimal = f"{row['over_minimal']['median']:.3f}" if row["over_minimal"] else "-"
        cost = f"{row['part_cost']:+.1%}" if row["part_cost"] is not None else "-"
        lines.append(f"  {name:<16}{row['images_per_second'] or 0:>10,.1f}{over_full:>10}{over_minimal:>12}"
                     f"{cost:>11}")
    minimal = breakdown.get("minimal")
    if minimal:
        lines.append(f"  {'minimal step':<16}{minimal['images_per_second'] or 0:>10,.1f}")
    for name, why in breakdown.get("not_applicable", {}).items():
        lines.append(f"  ({name}: not measured, {why})")
    return lines

