"""One training job: config → data → model → fit → evaluation → export.

``train(cfg)`` is the Python entry point (notebooks, tests, pipelines);
``main_job(cfg)`` is what ``python -m trainer`` runs inside Hydra. Every user
mistake surfaces as one line, and ``metrics.json`` says whether the run
finished; a run that did not finish is never marked finished.
"""

from __future__ import annotations

import os
import sys
import time

import keras
from omegaconf import DictConfig, OmegaConf

from trainer import records
from trainer.atomic import write_json, write_text
from trainer.config import validate
from trainer.registry import CALLBACKS, DATASETS, EVALUATORS, ConfigError, to_plain

METRICS_FILE = "metrics.json"


class RunFailed(RuntimeError):
    """The job stopped for a reason the user can act on (message: one line)."""


def default_run_dir(cfg: DictConfig) -> str:
    from trainer.config import _run_dir_name

    return os.path.join("runs", _run_dir_name(cfg.run.get("name"), "python"))


def train(cfg: DictConfig) -> dict:
    """Run the job described by ``cfg``; returns the final metrics (``metrics.json``'s content)."""
    validate(cfg)  # names and keys of every component, before any data is read
    run_dir = str(cfg.run.dir) if cfg.run.get("dir") else default_run_dir(cfg)
    os.makedirs(run_dir, exist_ok=True)
    report = records.RunReport(run_dir, cfg)
    write_text(os.path.join(run_dir, "config.yaml"), OmegaConf.to_yaml(cfg, resolve=True))
    report.start()
    try:
        _train(cfg, run_dir, report)
    except (ConfigError, RunFailed) as error:
        report.fail(str(error))
        raise
    except KeyboardInterrupt:
        report.fail("interrupted", status="interrupted")
        raise
    except BaseException as error:
        report.fail(f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}")
        raise
    return report.finish()


def _train(cfg: DictConfig, run_dir: str, report: "records.RunReport") -> None:
    from trainer.builders import build_loop, build_optimizer, exportable
    from trainer.runtime import setup_runtime

    seed = int(cfg.trainer.seed)
    quiet_library_logs()
    keras.utils.set_random_seed(seed)
    runtime = setup_runtime(cfg.runtime)
    source = DATASETS.build(cfg.data)
    batch_size = int(cfg.trainer.batch_size)
    if batch_size % runtime.num_replicas:
        raise ConfigError(f"trainer.batch_size={batch_size} does not split across "
                          f"{runtime.num_replicas} replicas; use a multiple of {runtime.num_replicas}")
    steps_per_epoch = int(cfg.trainer.steps_per_epoch or source.num_examples // batch_size)
    if steps_per_epoch < 1:
        raise ConfigError(f"the data set has {source.num_examples} images, fewer than one batch of "
                          f"{batch_size}; lower trainer.batch_size")
    epochs = int(cfg.trainer.epochs)
    evaluator = EVALUATORS.build(cfg.eval) if cfg.get("eval") is not None else None

    with runtime.scope():
        loop = build_loop(cfg, source.num_classes, source.image_size)
        loop.compile(optimizer=build_optimizer(cfg, steps_per_epoch, steps_per_epoch * epochs),
                     jit_compile=runtime.jit_compile,
                     steps_per_execution=runtime.steps_per_execution)
    callbacks = _callbacks(cfg, run_dir)
    checkpoint = next((c for c in callbacks if hasattr(c, "initial_epoch")), None)
    initial_epoch = checkpoint.initial_epoch if checkpoint and cfg.trainer.resume == "auto" else 0
    if checkpoint and cfg.trainer.resume != "auto":
        checkpoint.restore_from = None
    report.update(steps_per_epoch=steps_per_epoch, batch_size=batch_size,
                  num_classes=source.num_classes, train_images=source.num_examples,
                  resumed_from_epoch=initial_epoch or None)

    if evaluator is not None and initial_epoch == 0 and cfg.trainer.get("evaluate_untrained", True):
        report.update(untrained=evaluator.evaluate(loop.embedding_model, source))
        report.print_evaluation("untrained", report.metrics["untrained"])

    if initial_epoch < epochs:
        from trainer.data.pipeline import training_batches

        augment = _augmentation(cfg)
        # A loop that needs its own batches (P×K sampling, paired views) builds them.
        make_batches = getattr(loop, "training_batches", training_batches)
        batches = make_batches(source, batch_size, seed, steps_per_epoch, epochs,
                               augment=augment, start_epoch=initial_epoch)
        throughput = records.Throughput(batch_size)
        loggers = records.loggers(cfg, run_dir)
        try:
            loop.fit(batches, epochs=epochs, initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch,
                     callbacks=[*callbacks, throughput, report.epoch_logger(), *loggers.callbacks],
                     shuffle=False,  # the pipeline shuffles, per epoch and seeded
                     verbose=1 if sys.stdout.isatty() else 2)
        finally:
            loggers.close()
        guard = next((c for c in callbacks if getattr(c, "error", None)), None)
        if guard is not None:
            raise RunFailed(guard.error)
        report.update(images_per_second=throughput.images_per_second())

    if evaluator is not None:
        results = evaluator.evaluate(loop.embedding_model, source)
        report.update(final={"verification": results.get("heldout", {}),
                             **{k: v for k, v in results.items() if k != "heldout"}})
        report.print_evaluation("final", results)
    if cfg.run.get("export", True):
        path = export_embedding_model(exportable(loop.embedding_model), run_dir)
        report.update(export=os.path.relpath(path, run_dir))


def quiet_library_logs() -> None:
    """Keep the console for our progress: TFDS and TensorFlow log through absl at INFO."""
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.WARNING)
    except ImportError:  # JAX-only hosts
        pass


def export_embedding_model(model: keras.Model, run_dir: str) -> str:
    from trainer.atomic import save_with

    path = os.path.join(run_dir, "export", "embedding.keras")
    save_with(path, model.save)
    return path


def _augmentation(cfg: DictConfig):
    node = cfg.get("augment")
    if node is None or not node.get("ops"):
        return None
    from augment.pipeline import build_augmentation

    return build_augmentation(node)


def _callbacks(cfg: DictConfig, run_dir: str) -> list:
    built = []
    for key, node in (cfg.get("callbacks") or {}).items():
        if node is not None:
            built.append(CALLBACKS.build(node, run_dir=run_dir, config=cfg))
    return built


def main_job(cfg: DictConfig):
    """The command line's job: one line on a user mistake, exit status 2."""
    from hydra.core.hydra_config import HydraConfig

    OmegaConf.set_struct(cfg, False)
    cfg.run.dir = HydraConfig.get().runtime.output_dir
    OmegaConf.set_struct(cfg, True)
    try:
        metrics = train(cfg)
    except (ConfigError, RunFailed) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    accuracy = to_plain(metrics.get("final", {})).get("verification", {}).get("accuracy")
    print(f"run directory: {cfg.run.dir}")
    return accuracy  # what --multirun sweepers (Optuna) maximise
