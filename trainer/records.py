"""What a run leaves behind: ``metrics.json``, throughput, TensorBoard and wandb logs."""

from __future__ import annotations

import hashlib
import importlib.metadata
import math
import os
import re
import subprocess
import sys
import time
import unicodedata
from dataclasses import dataclass, field

import keras
from omegaconf import OmegaConf

from trainer.io import join, read_json, write_json
from trainer.registry import is_number

PACKAGES = ("tensorflow", "keras", "jax", "numpy", "hydra-core", "tensorflow-datasets", "wandb")


def git_commit() -> str:
    """The commit of the framework's checkout ("unknown" for an installed copy)."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    versions["keras_backend"] = keras.backend.backend()
    return versions


def read_metrics(run_dir: str) -> dict:
    """The run's ``metrics.json`` ({} when there is none, it is unreadable or not a record).

    A hand-edited file (a list, a number) is set aside with a warning, never a failure on every rerun:
    the run's state lives in its checkpoints, which the rerun reads on its own.
    """
    path = join(run_dir, "metrics.json")
    metrics = read_json(path, {})
    if not isinstance(metrics, dict):
        print(f"warning: {path} is not a metrics record (edited or damaged); it is ignored and "
              "rewritten", flush=True)
        return {}
    return metrics


def _previous_epochs(previous: dict) -> list:
    """The epoch entries of an earlier ``metrics.json`` that are well formed (others are dropped)."""
    epochs = previous.get("epochs")
    return [e for e in epochs if isinstance(e, dict) and isinstance(e.get("epoch"), int)] \
        if isinstance(epochs, list) else []


class RunReport:
    """``metrics.json``: rewritten atomically whenever something is learned."""

    def __init__(self, run_dir: str, cfg):
        self.path = os.path.join(run_dir, "metrics.json")
        previous = read_metrics(run_dir)
        self.metrics = {"status": "running", "run_dir": run_dir,
                        "epochs": _previous_epochs(previous),
                        "git_commit": git_commit(), "versions": package_versions()}
        if "untrained" in previous:
            self.metrics["untrained"] = previous["untrained"]
        self.started = time.time()
        wall = previous.get("wall_seconds")
        self.wall_before = float(wall) if is_number(wall) else 0.0

    def start(self) -> None:
        self._write()

    def update(self, **values) -> None:
        self.metrics.update({k: v for k, v in values.items() if v is not None})
        self._write()

    def fail(self, reason: str, status: str | None = None) -> None:
        """Record why the run stopped; never raises, so the reason it stopped is the one reported.

        When the whole file cannot be written (the disk is full, which may be why the run
        stopped), the status is written over the old file in place, in the space it already holds.
        """
        self.metrics["status"] = status or f"failed: {reason}"
        try:
            self._write()
        except OSError as error:
            if not write_status_in_place(self.path, self.metrics["status"]):
                print(f"warning: {self.path} could not be updated ({error.strerror}); it may still say "
                      "running", flush=True)

    def interrupted(self, line: str) -> None:
        """A signal stopped the run: status ``interrupted``, and the line the user was shown."""
        self.metrics["interruption"] = line
        self.fail(line, status="interrupted")

    def finish(self) -> dict:
        self.metrics["status"] = "finished"
        self._write()
        return self.metrics

    def _write(self) -> None:
        self.metrics["wall_seconds"] = round(self.wall_before + time.time() - self.started, 2)
        write_json(self.path, self.metrics)

    def epoch_logger(self) -> keras.callbacks.Callback:
        report = self

        class EpochLogger(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                entry = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
                report.metrics["epochs"] = [e for e in report.metrics["epochs"] if e["epoch"] <= epoch]
                report.metrics["epochs"].append(entry)
                report._write()

        return EpochLogger()

    @staticmethod
    def print_evaluation(when: str, results: dict) -> None:
        for name, values in results.items():
            if isinstance(values, dict) and "accuracy" in values:
                from trainer.evaluation.verification import sample_text

                print(f"{when} verification ({name}): accuracy {values['accuracy']:.4f} "
                      f"± {values.get('accuracy_std', 0.0):.4f} on {sample_text(values)}", flush=True)
                if values.get("note"):
                    print(f"note: {values['note']}", flush=True)


def write_status_in_place(path: str, status: str) -> bool:
    """``{"status": ...}`` written over ``path``'s own bytes (no new space needed); False if it cannot be.

    Only a local file that exists can be rewritten in place; the status is shortened to fit it.
    """
    import json

    try:
        with open(path, "r+b") as f:
            room = f.seek(0, os.SEEK_END)
            text = json.dumps({"status": status})
            while len(text.encode()) > room and len(status) > 8:  # shorten the reason, keep it JSON
                status = status[:max(8, len(status) - (len(text.encode()) - room) - 3)] + "..."
                text = json.dumps({"status": status})
            data = text.encode()
            if len(data) > room:
                return False
            f.seek(0)
            f.write(data + b" " * (room - len(data)))  # JSON allows trailing blanks; same size, same blocks
            f.flush()
            os.fsync(f.fileno())
        return True
    except OSError:
        return False


class Throughput(keras.callbacks.Callback):
    """Training images per second, timed per epoch without each epoch's first step.

    Only ``on_train_batch_begin`` and epoch hooks: a callback with a batch-*end*
    hook makes Keras convert every step's logs to Python numbers before the next
    step is dispatched (under JAX, the host then waits for the device each step),
    and counting steps does not need the logs. The epoch's end is a
    synchronisation point anyway (Keras reads the epoch's metrics), so the time
    taken there covers every step that was timed.
    """

    def __init__(self, batch_size: int):
        super().__init__()
        self.batch_size = batch_size
        self.images = 0
        self.seconds = 0.0
        self._epoch_start = None
        self._first_batch = None
        self._last_batch = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = None
        self._last_batch = None

    def on_train_batch_begin(self, batch, logs=None):
        # skip the epoch's first step: tracing and compilation (first epoch), iterator start
        if self._epoch_start is None and self._last_batch is not None:
            self._epoch_start = time.perf_counter()
            self._first_batch = batch
        self._last_batch = batch

    def on_epoch_end(self, epoch, logs=None):
        if self._epoch_start is not None:
            # the steps begun at _first_batch .. _last_batch, each call running steps_per_execution
            per_call = max(int(getattr(self.model, "steps_per_execution", 1) or 1), 1)
            steps = self._last_batch + per_call - self._first_batch
            self.seconds += time.perf_counter() - self._epoch_start
            self.images += steps * self.batch_size
        self._epoch_start = None
        if logs is not None and self.seconds:
            logs["images_per_second"] = self.images / self.seconds

    def images_per_second(self) -> float | None:
        return round(self.images / self.seconds, 1) if self.seconds else None


class ScalarWriter:
    """Scalars for people's tools: a TensorBoard folder (TensorFlow backend) and the open wandb run.

    The event writer is made on the first write and kept until ``close``; wandb is
    written only when the job opened a run (``wandb.run`` or the one given), and not at
    all with ``to_wandb=False`` (numbers at steps of their own, which wandb's single step
    counter cannot hold beside the epochs).
    """

    def __init__(self, tensorboard_dir: str | None, wandb_run=None, to_wandb: bool = True):
        self.tensorboard_dir = tensorboard_dir
        self.wandb_run = wandb_run
        self.to_wandb = to_wandb
        self._writer = None

    def write(self, scalars: dict, step: int, summary: bool = False, **wandb_extra) -> None:
        if self.tensorboard_dir is not None and keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            if self._writer is None:
                self._writer = tf.summary.create_file_writer(self.tensorboard_dir)
            with self._writer.as_default():
                for name, value in scalars.items():
                    tf.summary.scalar(name, value, step=step)
            self._writer.flush()
        run = self.wandb_run
        if not self.to_wandb:
            return
        if run is None:  # a run exists only when the logger opened one, so wandb is imported then
            wandb = sys.modules.get("wandb")
            run = wandb.run if wandb is not None else None
        if run is not None:
            run.log({**scalars, **wandb_extra})
            if summary:
                run.summary.update(scalars)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


@dataclass
class Loggers:
    """The run's TensorBoard and wandb records: epoch callbacks, plus the evaluations."""

    callbacks: list = field(default_factory=list)
    wandb_run: object = None
    tensorboard_dir: str | None = None

    def log_evaluation(self, when: str, results: dict, step: int) -> None:
        """``untrained``/``final`` evaluation numbers, as scalars named ``when/set/metric``."""
        scalars = evaluation_scalars(when, results)
        if not scalars or (self.tensorboard_dir is None and self.wandb_run is None):
            return
        folder = os.path.join(self.tensorboard_dir, "evaluation") if self.tensorboard_dir else None
        writer = ScalarWriter(folder, self.wandb_run)
        writer.write(scalars, step, summary=True)
        writer.close()

    def close(self) -> None:
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None


def evaluation_scalars(when: str, results: dict, prefix: str = "") -> dict:
    """Finite numbers of nested evaluation results, flattened to ``when/a/b`` names."""
    scalars = {}
    for key, value in results.items():
        name = f"{prefix}/{key}" if prefix else f"{when}/{key}"
        if isinstance(value, dict):
            scalars.update(evaluation_scalars(when, value, name))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            scalars[name] = float(value)
    return scalars


def wandb_identity(run_dir: str) -> tuple[str, str]:
    """(run id, display name) for wandb from any run folder.

    wandb refuses ids holding ``:;,#?/'`` and long ones, and a folder name is
    whatever the user's overrides made it (``loss=cosface,trainer.epochs=1``,
    non-ASCII names, ``run.name`` with slashes). The id keeps a readable ASCII
    part plus a digest of the folder's absolute path, so rerunning in the same
    folder resumes the same wandb run and two folders never share one.
    """
    folder = os.path.abspath(run_dir.rstrip("/")) if "://" not in run_dir else run_dir.rstrip("/")
    name = folder.rsplit("/", 1)[-1] or "run"
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "-", ascii_name).strip("-.")[:48] or "run"
    digest = hashlib.sha1(folder.encode()).hexdigest()[:10]
    return f"{readable}-{digest}", name[:128]


def loggers(cfg, run_dir: str) -> Loggers:
    """TensorBoard and wandb callbacks as the ``logger`` group asks."""
    node = cfg.get("logger") or {}
    result = Loggers()
    if node.get("tensorboard") and keras.backend.backend() == "tensorflow":
        result.tensorboard_dir = os.path.join(run_dir, "tensorboard")
        result.callbacks.append(keras.callbacks.TensorBoard(
            log_dir=result.tensorboard_dir, update_freq="epoch", write_graph=False))
    wandb_node = node.get("wandb") or {}
    mode = wandb_mode(wandb_node.get("mode", "disabled"))
    if mode != "disabled":
        try:
            import wandb
        except ImportError:  # an extra: the default logger falls back to TensorBoard alone
            print('note: wandb is not installed, so this run logs to TensorBoard only '
                  '(pip install ".[wandb]" adds it; logger.wandb.mode=disabled silences this)', flush=True)
            return result
        # Offline by default: no network, no login prompt; `wandb sync` uploads later.
        os.environ.setdefault("WANDB_SILENT", "true")
        run_id, display_name = wandb_identity(run_dir)
        result.wandb_run = wandb.init(
            mode=mode, dir=run_dir, project=wandb_node.get("project"), entity=wandb_node.get("entity"),
            tags=list(wandb_node.get("tags") or []), resume="allow", id=run_id, name=display_name,
            config=OmegaConf.to_container(cfg, resolve=True))
        result.callbacks.append(wandb_callback())
    return result


def wandb_mode(configured: str) -> str:
    """The wandb mode the environment's conventions leave of the configured one.

    ``WANDB_DISABLED=true`` or ``WANDB_MODE=disabled`` turn wandb off, ``WANDB_MODE=offline|online``
    chooses the mode of a configured run (``dryrun`` is wandb's old word for offline); a logger
    configured without wandb stays without it whatever the environment says.
    """
    configured = str(configured or "disabled")
    if configured == "disabled":
        return configured
    if os.environ.get("WANDB_DISABLED", "").strip().lower() in ("true", "1", "yes"):
        return "disabled"
    environment = os.environ.get("WANDB_MODE", "").strip().lower()
    return {"dryrun": "offline"}.get(environment, environment) if environment in (
        "disabled", "offline", "online", "dryrun") else configured


def wandb_callback() -> keras.callbacks.Callback:
    """wandb's Keras integration under TensorFlow; under JAX an epoch logger of our own.

    (The integration reads the learning rate with ``.numpy()``, which JAX arrays lack.)
    """
    if keras.backend.backend() == "tensorflow":
        from wandb.integration.keras import WandbMetricsLogger

        return WandbMetricsLogger(log_freq="epoch")
    import wandb

    class WandbEpochLogger(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            wandb.log({f"epoch/{k}": float(v) for k, v in (logs or {}).items()}, step=epoch)

    return WandbEpochLogger()
