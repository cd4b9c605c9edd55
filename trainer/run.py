"""One training job, in stages: config → data → model → fit → evaluation → export.

``train(cfg)`` is the Python entry point (notebooks, tests, pipelines);
``main_job(cfg)`` is what ``python -m trainer`` runs inside Hydra. Both run a
``Run``, which owns the run's life:

1. check: the config, the export formats, ``trainer.resume``, a writable folder;
2. lock: one writer per run folder; a finished run is left as it is;
3. assemble: the job (``trainer.job.build_job``);
4. plan: where training starts (``trainer.resume.plan_resume``, a frozen plan);
5. the untrained evaluation (fresh runs), 6. fit, 7. the final model's checks,
8. evaluate, 9. export.

From stage 3 on, ``metrics.json`` says whether the run finished: ``finished``,
``failed: <why>`` or ``interrupted``; a run that did not finish is never marked
finished. Every user mistake surfaces as one line. A signal (SIGTERM, Ctrl-C)
stops the run at the next step boundary or at once outside ``fit``
(``trainer.signals``); the state reached is saved, and rerunning the same
command resumes from it. Each stage boundary checks for a pending signal.
"""

from __future__ import annotations

import contextlib
import os
import sys

import keras
from omegaconf import DictConfig, OmegaConf

from models.heads.base import head_memory, head_memory_line
from trainer import io, processes, records, signals
from trainer.callbacks.base import TrainerCallback, per_step_waits
from trainer.callbacks.checkpoint import (Checkpoint, build_before_restore, checkpoint_dir, latest_checkpoint,
                                          non_finite_variable, restore_checkpoint, save_checkpoint)
from trainer.config import validate
from trainer.console import make_epoch_line, on_terminal
from trainer.errors import first_line
from trainer.job import Job, build_job
from trainer.registry import ConfigError, to_plain
from trainer.resume import Position, ResumePlan, plan_resume, resume_mode, write_fingerprint
from trainer.timings import StartupTimer, should_evaluate_untrained


class RunFailed(RuntimeError):
    """The job stopped for a reason the user can act on (message: one line)."""


class RunInterrupted(signals.Interrupted):
    """A signal stopped the run; the message says what was saved and how to resume."""


def default_run_dir(cfg: DictConfig) -> str:
    from trainer.config import run_dir_name

    return os.path.join("runs", run_dir_name(cfg.run.get("name"), "python"))


class AlreadyFinished(Exception):
    """The run directory holds a finished run; it is left exactly as it is."""

    def __init__(self, run_dir: str, metrics: dict):
        accuracy = to_plain(metrics.get("final", {})).get("verification", {}).get("accuracy")
        score = f" (final held-out accuracy {accuracy:.4f})" if isinstance(accuracy, float) else ""
        super().__init__(f"{shown_path(run_dir)} already holds a finished run{score}; its results are unchanged "
                         f"(metrics.json, export/). To train again, give the run another folder: "
                         f"run.name=<new name>")
        self.metrics = metrics


def train(cfg: DictConfig) -> dict:
    """Run the job described by ``cfg``; returns the final metrics (``metrics.json``'s content).

    A run directory that holds a finished run is never changed (``AlreadyFinished``).
    """
    return Run(cfg)()


class Run:
    """One run of one job, stage by stage (the module's docstring lists them)."""

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self.run_dir = str(cfg.run.dir) if cfg.run.get("dir") else default_run_dir(cfg)
        self.records_dir = self.run_dir  # this process's records (a sub-folder on non-chief workers)
        self.report: records.RunReport | None = None
        self.loggers = records.Loggers()
        self.job: Job | None = None
        self.plan: ResumePlan | None = None
        self.reached: Position | None = None  # the position whose state the model holds

    def __call__(self) -> dict:
        with signals.handling(on_exit_now=self._record_exit_now):
            self.check()
            with self.locked():
                return self.recorded()

    # -- 1, 2: before anything is written ------------------------------------------------------
    def check(self) -> None:
        from trainer.runtime import worker_dir
        from trainer.run_dir import check_writable

        validate(self.cfg)  # names and keys of every component, before any data is read
        if self.cfg.run.get("export_formats"):  # an unknown format or a missing optional package
            from trainer.export import check_available, resolve_formats

            check_available(resolve_formats(self.cfg.run.export_formats))  # a name or a list of names
        resume_mode(self.cfg)
        # A multi-process JAX job: joined before any device is touched; every process refuses
        # a config that differs from the others'.
        processes.join(self.cfg.runtime)
        processes.agree_on_config(self.cfg)
        self.records_dir = worker_dir(self.run_dir, self.cfg.runtime)  # non-chief workers: a sub-folder
        if not io.is_remote(self.records_dir):
            check_writable(self.records_dir)

    @contextlib.contextmanager
    def locked(self):
        from trainer.run_dir import RunLock, remove_leftover_temporaries

        local = not io.is_remote(self.records_dir)
        lock = RunLock(self.records_dir).acquire() if local else None
        try:
            previous = records.read_metrics(self.records_dir)
            if previous.get("status") == "finished":
                raise AlreadyFinished(self.records_dir, previous)
            if local:
                remove_leftover_temporaries(self.records_dir)
            yield
        finally:
            if lock is not None:
                lock.release()

    # -- 3 … 9: recorded in metrics.json ---------------------------------------------------------
    def recorded(self) -> dict:
        """The stages with ``metrics.json`` kept true: finished, failed (why) or interrupted."""
        self.report = records.RunReport(self.records_dir, self.cfg)
        self.report.start()
        self.startup = StartupTimer()  # import, data, untrained evaluation, compilation, first step
        try:
            for stage in (self.assemble, self.plan_start, self.evaluate_untrained, self.fit,
                          self.check_final_model, self.evaluate, self.export):
                signals.raise_if_pending()
                with data_mistakes():  # held-out data is read in evaluation as training data is in fit
                    stage()
        except signals.Interrupted as interruption:
            raise self.interrupted(interruption) from None
        except (ConfigError, RunFailed) as error:
            self.report.fail(str(error))
            raise
        except BaseException as error:
            from trainer.callbacks.optuna_pruning import is_pruned

            # A pruned sweep trial stopped on purpose: its own status, not a failure.
            self.report.fail(f"{type(error).__name__}: {first_line(error)}",
                             status="pruned" if is_pruned(error) else None)
            raise
        finally:
            self.loggers.close()
        return self.report.finish()

    def assemble(self) -> None:
        with self.startup.phase("data"):
            self.job = build_job(self.cfg, self.run_dir)
        # Open for the whole job: TensorBoard and wandb get the untrained and final evaluations too.
        if self.job.runtime.is_chief:
            from trainer import tensorboard_pictures

            self.loggers = records.loggers(self.cfg, self.run_dir)
            # Step curves, per-epoch held-out accuracy, a sweep trial's hparams (logger.pictures).
            self.loggers.callbacks += tensorboard_pictures.callbacks(self.cfg, self.loggers.tensorboard_dir,
                                                                     self.job.data.heldout)

    def plan_start(self) -> None:
        job = self.job
        with data_mistakes():  # the plan reads the first training images (the data's fingerprint)
            self.plan = plan_resume(self.cfg, job, self.run_dir)
        agree_on_start(self.plan)
        if job.runtime.is_chief:
            write_fingerprint(self.run_dir, self.plan)
        # Once the plan accepts this config: a refused rerun leaves the run's config.yaml as it was.
        io.write_text(io.join(self.records_dir, "config.yaml"), OmegaConf.to_yaml(self.cfg, resolve=True))
        start = self.plan.start
        self.report.update(steps_per_epoch=job.steps_per_epoch, batch_size=job.batch_size,
                           num_classes=job.source.num_classes, train_images=job.source.num_examples,
                           replicas=job.runtime.num_replicas, runtime=job.runtime.name,
                           precision=job.runtime.precision,
                           resumed_from_epoch=None if self.plan.fresh else start.epoch,
                           resumed_from_step=self.plan.restored_step,
                           resume_changes_accepted=list(self.plan.accepted_changes) or None)

    def evaluate_untrained(self) -> None:
        job = self.job
        if not self.plan.fresh or not should_evaluate_untrained(self.cfg, job):  # eval.untrained
            return
        if processes.multi_process():  # the model spans every process; it is evaluated once trained
            print("note: no untrained evaluation in a multi-process job", flush=True)
            return
        with self.startup.phase("untrained_eval"):
            untrained = job.evaluator.evaluate(job.loop.embedding_model, job.source)
        self.report.update(untrained=untrained)
        self.report.print_evaluation("untrained", untrained)
        self.loggers.log_evaluation("untrained", untrained, step=0)

    def fit(self) -> None:
        """``fit`` over the planned segments: a run resumed mid-epoch is two fit calls."""
        job, plan, loop = self.job, self.plan, self.job.loop
        if not plan.segments:  # every step done (stopped in evaluation or export): the saved weights
            if plan.restore_path is not None:
                self.restore(job.runtime.prepare_fit(loop, job.batches(max(job.epochs - 1, 0), job.epochs)))
                self.reached = plan.start
            self.report.update(steps=job.epochs * job.steps_per_epoch, optimizer_steps=optimizer_steps(loop))
            return
        loop.prepare(job.data)  # per-run statistics the loop needs (BCT: the old class means)
        loop_callbacks = loop.epoch_callbacks(job.data)  # first: loggers see what they add
        stopper = StopAtSignal()  # after the guards and the checkpoint callback
        throughput = records.Throughput(job.batch_size)
        # A progress bar on a terminal; in a log file, one rounded line per epoch.
        progress = [] if on_terminal() else [make_epoch_line(job.epochs)]
        # Only the chief of a multi-worker job saves checkpoints (every worker holds the same weights);
        # every process of a multi-process JAX job takes part (they gather the split rows; the chief writes).
        job_callbacks = [c for c in job.callbacks
                         if job.runtime.is_chief or processes.multi_process() or not isinstance(c, Checkpoint)]
        first_steps = self.startup.callback(on_first_step=lambda timer: print(timer.line(), flush=True))
        callbacks = [first_steps, *job_callbacks, stopper, *loop_callbacks, throughput, self.report.epoch_logger(),
                     *self.loggers.callbacks, *progress]
        waiting = per_step_waits(callbacks)
        if waiting and keras.backend.backend() == "jax":
            print(f"note: {', '.join(waiting)} read every step's logs on the training thread, so the host "
                  "waits for the device at every step; a callback whose batch-end hook only reads the logs "
                  "can say `async_safe = True`", flush=True)
        for index, segment in enumerate(plan.segments):
            batches = job.runtime.prepare_fit(loop, job.batches(segment.start_epoch, segment.end_epoch,
                                                                segment.skip_batches))
            if index == 0 and plan.restore_path is not None:
                batches = self.restore(batches)
            if index == 0:
                stepped_before = optimizer_steps(loop)
                self.record_head_memory(loop)
            job.set_position(segment.skip_batches)
            stopper.set_position(job.steps_per_epoch, segment.skip_batches)
            with data_mistakes(), signals.deferred():
                loop.fit(batches, epochs=segment.end_epoch, initial_epoch=segment.start_epoch,
                         steps_per_epoch=job.steps_per_epoch - segment.skip_batches, callbacks=callbacks,
                         shuffle=False,  # the pipeline shuffles, per epoch and seeded
                         verbose=1 if on_terminal() else 0)
            reason = job.stop_reason()
            if reason is not None:
                raise RunFailed(reason)
            self.reached = (Position(*stopper.stopped_at) if stopper.stopped_at else
                            Position(segment.end_epoch, 0, segment.end_epoch * job.steps_per_epoch))
            signals.raise_if_pending()
        skipped = list(dict.fromkeys(map(tuple, job.source.corrupt_records)))  # also read by the plan
        if skipped:  # data.on_corrupt=skip: say what was left out
            self.report.update(corrupt_records={
                "count": len(skipped), "records": [{"file": f, "record": i, "reason": r} for f, i, r in skipped]})
        self.report.update(startup={**self.startup.seconds(), "compile_cache": job.runtime.compile_cache},
                           images_per_second=throughput.images_per_second(),
                           steps=job.epochs * job.steps_per_epoch, optimizer_steps=optimizer_steps(loop))
        if optimizer_steps(loop) == stepped_before:
            why = (f"all {len(skipped)} training images read were skipped as corrupt (data.on_corrupt=skip)"
                   if skipped else "no training batch reached it")
            raise RunFailed(f"the optimizer never stepped: {why}; nothing was trained, so nothing is "
                            "evaluated or exported")

    def record_head_memory(self, loop) -> None:
        """A sharded head's share of one device, read from its stored variables once they exist:
        printed, and kept in ``metrics.json`` (``head_per_device``)."""
        found = head_memory(loop.head, loop.optimizer)
        if found is not None:
            print(head_memory_line(found), flush=True)
            self.report.update(head_per_device=found)

    def restore(self, batches):
        """Load the plan's checkpoint into the loop (its variables built from ``batches`` first)."""
        job, plan = self.job, self.plan
        with job.runtime.scope():
            batches = build_before_restore(job.loop, batches)
            restore_checkpoint(job.loop, plan.restore_path, plan.random_states)
        print(f"resumed from {plan.restore_path} (epoch {plan.start.epoch + 1}, batch {plan.start.batch}, "
              f"step {plan.start.step})", flush=True)
        return batches

    def check_final_model(self) -> None:
        # From here on the chief works alone, on a whole copy of the trained model.
        processes.localise(self.job.loop)
        if self.job.runtime.is_chief:
            check_final_model(self.job)

    def evaluate(self) -> None:
        job = self.job
        if job.evaluator is None or not job.runtime.is_chief:  # evaluated once, by the chief
            return
        results = job.evaluator.evaluate(job.loop.embedding_model, job.source)
        # A loop may measure what only it knows (BCT: old-vs-new verification).
        results.update(job.loop.final_metrics(job.data))
        if not {"heldout", "album"} & set(results):  # say so rather than report an empty evaluation
            why = job.source.heldout_unavailable or f"data={self.cfg.data.name} has no held-out identities"
            results["heldout"] = {"skipped": why}
            print(f"note: no held-out verification: {why} (data.heldout_path=... adds held-out people)",
                  flush=True)
        self.report.update(final={"verification": results.get("heldout", {}),
                                  **{k: v for k, v in results.items() if k != "heldout"}})
        self.report.print_evaluation("final", results)
        self.loggers.log_evaluation("final", results, step=optimizer_steps(job.loop))
        from trainer import tensorboard_pictures  # the ROC, score histograms and projector, by logger.pictures

        tensorboard_pictures.write_final(self.cfg, self.loggers.tensorboard_dir, job.loop.embedding_model,
                                         job.data.heldout, step=optimizer_steps(job.loop))

    def export(self) -> None:
        from trainer.export.model_files import export_embedding_model, exportable

        if not self.cfg.run.get("export", True) or (processes.multi_process() and not self.job.runtime.is_chief):
            return
        job, records_dir = self.job, self.records_dir
        model = exportable(job.loop.embedding_model)
        path = export_embedding_model(model, records_dir)
        self.report.update(export=os.path.relpath(path, records_dir) if "://" not in path else path)
        formats = self.cfg.run.get("export_formats") or []  # a name or a list: export_formats resolves both
        if formats and job.runtime.is_chief:  # SavedModel / TFLite / ONNX, each checked: export/parity.json
            from trainer.export.deploy import export_formats

            parity = export_formats(model, os.path.dirname(path), formats, job.source, self.cfg.get("eval"),
                                    source_path=path)
            self.report.update(export_formats={
                name: {k: row.get(k) for k in ("passed", "min_cosine", "accuracy", "error") if k in row}
                for name, row in parity["formats"].items()})

    # -- interruptions -----------------------------------------------------------------------------
    def interrupted(self, interruption: signals.Interrupted) -> RunInterrupted:
        """Save the state reached, record ``interrupted`` and say in one line how to resume."""
        try:
            problem = self.save_reached()
        except Exception as error:  # the save itself failed (a full disk): keep what is there
            problem = f"it could not be saved ({first_line(error)})"
        reached = f" at step {self.reached.step}" if self.reached is not None and self.reached.step else ""
        latest = latest_checkpoint(self.run_dir)
        if latest is None:
            line = f"interrupted ({interruption.name}){reached} before any checkpoint was saved"
        else:
            where = shown_path(io.join(checkpoint_dir(self.run_dir), latest["file"]))
            saved_now = self.reached is not None and int(latest["step"]) == self.reached.step
            line = (f"interrupted ({interruption.name}){reached}: saved {where}" if saved_now else
                    f"interrupted ({interruption.name}){reached}: {problem + '; ' if problem else ''}"
                    f"the last checkpoint is {where} (step {latest['step']})")
        line += "; rerun the same command to resume" if latest else "; rerun the same command to start again"
        self.report.interrupted(line)
        return RunInterrupted(interruption.signum, line)

    def save_reached(self) -> str | None:
        """Write a checkpoint at the position reached unless one is there; why not, when it fails."""
        reached, job = self.reached, self.job
        # Every process of a multi-process JAX job saves together (a collective); the chief decides.
        if reached is None or reached.step == 0 or not (job.runtime.is_chief or processes.multi_process()):
            return None
        latest = latest_checkpoint(self.run_dir)
        if processes.from_chief(bool(latest and int(latest["step"]) == reached.step)):
            return None
        path = save_checkpoint(job.loop, checkpoint_dir(self.run_dir), reached.epoch, reached.batch, reached.step,
                               steps_per_epoch=job.steps_per_epoch, batch_size=job.batch_size)
        processes.barrier()  # the others report the checkpoint once the chief wrote it
        return None if path else "its state is not finite and was not saved"

    def _record_exit_now(self) -> None:
        """A second signal ends the process at once: ``metrics.json`` still says so."""
        if self.report is not None:
            self.report.interrupted("interrupted twice: exited at once, without saving")


class StopAtSignal(TrainerCallback):
    """Ends ``fit`` one call after the first step boundary that sees a signal, and remembers the
    position reached.

    After the guards and the checkpoint callback: a step a guard stopped on is not the
    position reached. The run saves the state at ``stopped_at`` once ``fit`` returns
    (every backend has synchronised its variables by then).
    """

    # A multi-process job shares a signal (a preempted host) by a tiny blocking all-gather, so
    # every process stops at the same step; doing it every step would make each step wait.
    share_every = 10

    def __init__(self):
        super().__init__()
        self.stopped_at: tuple[int, int, int] | None = None  # (epoch, batch, step)

    def on_train_batch_begin(self, batch, logs=None):
        # At the boundary before this call (no batch-end hook, see callbacks.base): the call
        # still runs, then fit stops, so the position reached is the one after it.
        if processes.multi_process() and self.step_before(batch) % self.share_every == 0:
            shared = processes.largest(signals.pending() or 0)
            if shared:
                signals.remember(shared)
        elif processes.multi_process():
            return
        if signals.pending() is None or self.host_model.stop_training:
            return
        self.host_model.stop_training = True
        trained = min(self.batches_before(batch) + self.batches_in_call(), self.steps_per_epoch)
        self.stopped_at = (self.epoch, trained, self.epoch * self.steps_per_epoch + trained)


def agree_on_start(plan: ResumePlan) -> None:
    """Every process of a job starts from the same step, or none trains (a run folder not shared)."""
    starts = processes.exchange("start-step", str(plan.restored_step)) if processes.multi_process() else []
    if len(set(starts)) > 1:
        raise ConfigError(f"the processes would start from different steps ({', '.join(starts)}): every "
                          "process must read the same run folder; give run.dir=<shared storage> (gs://, NFS)")


def optimizer_steps(loop) -> int:
    return int(keras.ops.convert_to_numpy(loop.optimizer.iterations))


@contextlib.contextmanager
def data_mistakes():
    """The user's data mistake inside a TensorFlow error from the input pipeline, as one line."""
    from trainer.data.errors import data_error_inside

    try:
        yield
    except Exception as error:
        inside = data_error_inside(error)
        if inside is None or inside is error:
            raise
        raise RunFailed(str(inside)) from None


def check_final_model(job: Job) -> None:
    """A model with non-finite weights or collapsed embeddings is a failed run, whatever on_nan said."""
    import numpy as np

    model = job.loop.embedding_model
    bad = non_finite_variable(model)
    if bad is not None:
        raise RunFailed(f"the trained model is not usable: {bad} is not finite; lower optimizer.lr "
                        "or use runtime.precision=float32")
    size = int(model.input_shape[1])
    probe = np.random.default_rng(0).uniform(0, 255, (8, size, size, 3)).astype("float32")
    embeddings = np.asarray(keras.ops.convert_to_numpy(model(probe, training=False)), np.float64)
    norms = np.linalg.norm(embeddings.reshape(len(probe), -1), axis=1)
    if not np.isfinite(embeddings).all() or not (norms > 1e-6).all():
        raise RunFailed("the trained model is not usable: its embeddings are not finite or are zero; "
                        "lower optimizer.lr or use runtime.precision=float32")


def shown_path(path: str) -> str:
    """A path as a person wants to read it: relative when it is under the current folder."""
    if "://" in path or not os.path.isabs(path):
        return path
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def main_job(cfg: DictConfig):
    """The command line's job: one line on a user mistake (exit 2) or an interruption (143, 130)."""
    from hydra.core.hydra_config import HydraConfig

    OmegaConf.set_struct(cfg, False)
    if not cfg.run.get("dir"):  # run.dir=gs://bucket/... keeps the job's files there
        cfg.run.dir = HydraConfig.get().runtime.output_dir
    OmegaConf.set_struct(cfg, True)
    try:
        metrics = train(cfg)
    except AlreadyFinished as finished:
        print(finished)
        accuracy = to_plain(finished.metrics.get("final", {})).get("verification", {}).get("accuracy")
        return accuracy
    except signals.Interrupted as interruption:  # RunInterrupted's line says what was saved
        print(interruption if isinstance(interruption, RunInterrupted) else
              f"interrupted ({interruption.name}) before the run started; nothing was written",
              file=sys.stderr)
        sys.exit(interruption.exit_code)
    except (ConfigError, RunFailed) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    accuracy = to_plain(metrics.get("final", {})).get("verification", {}).get("accuracy")
    print(f"run directory: {shown_path(str(cfg.run.dir))}")
    return accuracy  # what --multirun sweepers (Optuna) maximise
