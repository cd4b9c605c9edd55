"""One training job: config → data → model → fit → evaluation → export.

``train(cfg)`` is the Python entry point (notebooks, tests, pipelines);
``main_job(cfg)`` is what ``python -m trainer`` runs inside Hydra. Every user
mistake surfaces as one line, and ``metrics.json`` says whether the run
finished; a run that did not finish is never marked finished.
"""

from __future__ import annotations

import os
import sys

import keras
from omegaconf import DictConfig, OmegaConf

from trainer import records
from trainer.errors import first_line
from trainer.io import write_text
from trainer.config import validate
from trainer.console import make_epoch_line, on_terminal
from trainer.job import Job, build_job
from trainer.registry import ConfigError, to_plain
from trainer.run_dir import Terminated, raise_if_terminated

class RunFailed(RuntimeError):
    """The job stopped for a reason the user can act on (message: one line)."""


class Preempted(RunFailed):
    """SIGTERM arrived; the state was saved and rerunning the same command resumes."""


PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM, what schedulers expect of a terminated job


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


RESUME_MODES = ("auto", "never")


def resume_mode(cfg: DictConfig) -> str:
    """``trainer.resume``: auto, never, or an existing checkpoint path; anything else is one line."""
    value = str(cfg.trainer.get("resume", "auto"))
    if value in RESUME_MODES or os.path.exists(value):
        return value
    raise ConfigError(f"trainer.resume={value!r} is not auto, never or an existing checkpoint "
                      "(a run folder, its checkpoints/ folder or a ckpt-<step>.weights.h5 file)")


def train(cfg: DictConfig) -> dict:
    """Run the job described by ``cfg``; returns the final metrics (``metrics.json``'s content).

    A run directory that holds a finished run is never changed (``AlreadyFinished``).
    """
    from trainer import io
    from trainer.run_dir import RunLock, check_writable, interrupt_on_sigterm, remove_leftover_temporaries
    from trainer.runtime import worker_dir

    validate(cfg)  # names and keys of every component, before any data is read
    if cfg.run.get("export_formats"):  # an unknown format or a missing optional package: before training
        from trainer.export import check_available, resolve_formats

        check_available(resolve_formats(cfg.run.export_formats))  # a name or a list of names
    resume = resume_mode(cfg)
    run_dir = str(cfg.run.dir) if cfg.run.get("dir") else default_run_dir(cfg)
    records_dir = worker_dir(run_dir, cfg.runtime)  # non-chief workers keep to a sub-folder
    local = not io.is_remote(records_dir)
    if local:
        check_writable(records_dir)
    lock = RunLock(records_dir).acquire() if local else None
    try:
        previous = records.read_metrics(records_dir)
        if previous.get("status") == "finished":
            raise AlreadyFinished(records_dir, previous)
        if local:
            remove_leftover_temporaries(records_dir)
        interrupt_on_sigterm()
        return _train_recorded(cfg, run_dir, records_dir, resume)
    finally:
        if lock is not None:
            lock.release()


def _train_recorded(cfg: DictConfig, run_dir: str, records_dir: str, resume: str) -> dict:
    """The job with ``metrics.json`` kept true: finished, failed (why) or interrupted."""
    from trainer import io

    report = records.RunReport(records_dir, cfg)
    write_text(io.join(records_dir, "config.yaml"), OmegaConf.to_yaml(cfg, resolve=True))
    report.start()
    try:
        _train(cfg, run_dir, report, resume)
    except Preempted as error:
        report.fail(str(error), status="interrupted")
        raise
    except (ConfigError, RunFailed) as error:
        report.fail(str(error))
        raise
    except KeyboardInterrupt as error:  # Ctrl-C, or SIGTERM outside fit
        report.fail(f"interrupted ({error or 'Ctrl-C'})", status="interrupted")
        raise
    except BaseException as error:
        from trainer.callbacks.optuna_pruning import is_pruned

        # A pruned sweep trial stopped on purpose: its own status, not a failure.
        report.fail(f"{type(error).__name__}: {first_line(error)}",
                    status="pruned" if is_pruned(error) else None)
        raise
    return report.finish()


def _train(cfg: DictConfig, run_dir: str, report: "records.RunReport", resume: str) -> None:
    job = build_job(cfg, run_dir)
    raise_if_terminated()  # stage boundaries: a SIGTERM that was swallowed on its way stops here
    segments, fresh = _resume_plan(job, resume, report)
    # Open for the whole job: TensorBoard and wandb get the untrained and final evaluations too.
    loggers = records.loggers(cfg, run_dir) if job.runtime.is_chief else records.Loggers()
    try:
        if job.evaluator is not None and fresh and cfg.trainer.get("evaluate_untrained", True):
            untrained = job.evaluator.evaluate(job.loop.embedding_model, job.source)
            report.update(untrained=untrained)
            report.print_evaluation("untrained", untrained)
            loggers.log_evaluation("untrained", untrained, step=0)
        raise_if_terminated()
        if segments:
            _fit(job, cfg, run_dir, report, segments, loggers)
        elif job.checkpoint is not None and job.checkpoint.restore_from:
            _restore_without_training(job, cfg)  # every step done: evaluate the saved weights
            report.update(steps=job.epochs * job.steps_per_epoch,  # as a run that trained says
                          optimizer_steps=int(keras.ops.convert_to_numpy(job.loop.optimizer.iterations)))
        _check_final_model(job)
        raise_if_terminated()
        _evaluate_and_export(job, cfg, run_dir, report, loggers)
    finally:
        loggers.close()


def _resume_plan(job: Job, resume: str, report: "records.RunReport") -> tuple[list, bool]:
    """The fit segments still to run, and whether the run starts from scratch."""
    from trainer.callbacks.checkpoint import resume_segments

    checkpoint = job.checkpoint
    if checkpoint is None and resume not in ("auto", "never"):
        raise ConfigError(f"trainer.resume={resume} needs the checkpoint callback (callbacks=default)")
    if checkpoint:
        checkpoint.choose_restore(resume, job.steps_per_epoch)
        checkpoint.writes = job.runtime.is_chief
        checkpoint.check_compatible(job.steps_per_epoch, job.batch_size)
    initial_epoch, initial_batch = (checkpoint.initial_epoch, checkpoint.initial_batch) if checkpoint else (0, 0)
    restored = (checkpoint.restore_from or {}) if checkpoint else {}
    report.update(steps_per_epoch=job.steps_per_epoch, batch_size=job.batch_size,
                  num_classes=job.source.num_classes, train_images=job.source.num_examples,
                  replicas=job.runtime.num_replicas, runtime=job.runtime.name,
                  precision=job.runtime.precision,
                  resumed_from_epoch=initial_epoch if restored else None,
                  resumed_from_step=restored.get("step"))
    fresh = initial_epoch == 0 and initial_batch == 0
    return resume_segments(initial_epoch, initial_batch, job.epochs, job.steps_per_epoch), fresh


def _fit(job: Job, cfg: DictConfig, run_dir: str, report: "records.RunReport", segments,
         loggers: "records.Loggers") -> None:
    """``fit`` over the planned segments: a run resumed mid-epoch is two fit calls."""
    from trainer.callbacks.checkpoint import build_before_restore

    loop, checkpoint = job.loop, job.checkpoint
    loop.prepare(job.data)  # per-run statistics the loop needs (BCT: the old class means)
    loop_callbacks = loop.epoch_callbacks(job.data)  # first: loggers see what they add
    throughput = records.Throughput(job.batch_size)
    epoch_logger = report.epoch_logger()
    # A progress bar on a terminal; in a log file, one rounded line per epoch.
    progress = [] if on_terminal() else [make_epoch_line()]
    for segment in segments:
        batches = job.batches(segment.start_epoch, segment.end_epoch, segment.skip_batches)
        batches = job.runtime.prepare_fit(loop, batches)
        if checkpoint is not None and checkpoint.restore_from:
            batches = build_before_restore(loop, batches)
        job.set_position(segment.skip_batches)
        try:
            loop.fit(batches, epochs=segment.end_epoch, initial_epoch=segment.start_epoch,
                     steps_per_epoch=job.steps_per_epoch - segment.skip_batches,
                     callbacks=[*job.callbacks, *loop_callbacks, throughput, epoch_logger,
                                *loggers.callbacks, *progress],
                     shuffle=False,  # the pipeline shuffles, per epoch and seeded
                     verbose=1 if on_terminal() else 0)
        except Exception as error:
            data_mistake = _data_error_line(error)
            if data_mistake is None:
                raise
            raise RunFailed(data_mistake) from None
        reason = job.stop_reason()
        if reason is not None:
            raise RunFailed(reason)
        if checkpoint is not None and checkpoint.preempted:
            saved = checkpoint.saved["step"] if checkpoint.saved else "?"
            raise Preempted(f"preempted (SIGTERM): saved step {saved} in {checkpoint.folder}; "
                            "rerun the same command to resume")
    skipped = list(job.source.corrupt_records)
    if skipped:  # data.on_corrupt=skip: say what was left out
        report.update(corrupt_records={"count": len(skipped),
                                       "records": [{"file": f, "record": i, "reason": r} for f, i, r in skipped]})
    report.update(images_per_second=throughput.images_per_second(),
                  steps=job.epochs * job.steps_per_epoch,
                  optimizer_steps=int(keras.ops.convert_to_numpy(loop.optimizer.iterations)))


def _data_error_line(error: BaseException) -> str | None:
    """The user's data mistake inside a TensorFlow error from the input pipeline, as one line."""
    import re

    found = re.search(r"(corrupt record \d+ of [^\n]*?(?:data\.on_corrupt=skip|$))", str(error), re.M)
    return found.group(1).strip() if found else None


def _restore_without_training(job: Job, cfg: DictConfig) -> None:
    """Load the checkpoint of a run whose every step is done (killed during evaluation or export)."""
    from trainer.callbacks.checkpoint import build_before_restore

    batches = job.batches(max(job.epochs - 1, 0), job.epochs)
    with job.runtime.scope():
        build_before_restore(job.loop, job.runtime.prepare_fit(job.loop, batches))
        job.checkpoint.restore(job.loop)


def _check_final_model(job: Job) -> None:
    """A model with non-finite weights or collapsed embeddings is a failed run, whatever on_nan said."""
    import numpy as np

    from trainer.callbacks.checkpoint import non_finite_variable

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


def _evaluate_and_export(job: Job, cfg: DictConfig, run_dir: str, report: "records.RunReport",
                         loggers: "records.Loggers") -> None:
    from trainer.export.model_files import export_embedding_model, exportable

    if job.evaluator is not None:
        results = job.evaluator.evaluate(job.loop.embedding_model, job.source)
        # A loop may measure what only it knows (BCT: old-vs-new verification).
        results.update(job.loop.final_metrics(job.data))
        if not {"heldout", "album"} & set(results):  # say so rather than report an empty evaluation
            why = job.source.heldout_unavailable or f"data={cfg.data.name} has no held-out identities"
            results["heldout"] = {"skipped": why}
            print(f"note: no held-out verification: {why} (data.heldout_path=... adds held-out people)",
                  flush=True)
        report.update(final={"verification": results.get("heldout", {}),
                             **{k: v for k, v in results.items() if k != "heldout"}})
        report.print_evaluation("final", results)
        loggers.log_evaluation("final", results,
                               step=int(keras.ops.convert_to_numpy(job.loop.optimizer.iterations)))
    if cfg.run.get("export", True):
        records_dir = job.runtime.worker_dir(run_dir)
        model = exportable(job.loop.embedding_model)
        path = export_embedding_model(model, records_dir)
        report.update(export=os.path.relpath(path, records_dir) if "://" not in path else path)
        formats = cfg.run.get("export_formats") or []  # a name or a list: export_formats resolves both
        if formats and job.runtime.is_chief:  # SavedModel / TFLite / ONNX, each checked: export/parity.json
            from trainer.export.deploy import export_formats

            parity = export_formats(model, os.path.dirname(path), formats, job.source, cfg.get("eval"),
                                    source_path=path)
            report.update(export_formats={
                name: {k: row.get(k) for k in ("passed", "min_cosine", "accuracy", "error") if k in row}
                for name, row in parity["formats"].items()})


def shown_path(path: str) -> str:
    """A path as a person wants to read it: relative when it is under the current folder."""
    if "://" in path or not os.path.isabs(path):
        return path
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def main_job(cfg: DictConfig):
    """The command line's job: one line on a user mistake, exit status 2."""
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
    except Preempted as error:
        print(f"interrupted: {error}", file=sys.stderr)
        sys.exit(PREEMPTED_EXIT_CODE)
    except Terminated:
        print("interrupted: SIGTERM before training finished; rerun the same command to resume",
              file=sys.stderr)
        sys.exit(PREEMPTED_EXIT_CODE)
    except (ConfigError, RunFailed) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    accuracy = to_plain(metrics.get("final", {})).get("verification", {}).get("accuracy")
    print(f"run directory: {shown_path(str(cfg.run.dir))}")
    return accuracy  # what --multirun sweepers (Optuna) maximise
