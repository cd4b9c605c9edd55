"""Where a run starts: a frozen plan made once, before any training, from the run folder.

``plan_resume(cfg, job)`` reads ``trainer.resume`` (``auto``: this run folder's
newest readable checkpoint; ``never``; or a checkpoint path) and returns a
``ResumePlan``: the checkpoint to restore (or none), the data position training
starts from, the ``fit`` segments still to run, and whether the run is fresh.
The runner restores and trains by the plan; nothing else decides where a run
resumes, so resuming works whichever callbacks are configured (``callbacks=none``
too: the checkpoints an interrupted run saved are found all the same).

Resume is exact to the batch: the pipeline gives each epoch its own seeded
order, so the run skips the ``batch`` batches of the interrupted epoch already
trained, finishes that epoch in a first ``fit`` call, and continues with whole
epochs in a second one (``resume_segments``).

Resume refuses to mix two runs. The run's fingerprint (``fingerprint``: model,
head, loss, loop, optimizer and schedule configs, and the data's identity count,
image count and a digest of its first images with their labels) is written to
``checkpoints/fingerprint.json`` when a run starts; a rerun whose fingerprint
differs is refused in one line naming the keys, unless
``trainer.resume_changes=allow`` (then recorded in ``metrics.json``). What may
change freely is listed in docs/trust.md.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from omegaconf import OmegaConf

from trainer import io
from trainer.callbacks.checkpoint import checkpoint_at, checkpoint_dir, restorable_checkpoint
from trainer.registry import ConfigError

RESUME_MODES = ("auto", "never")
FINGERPRINT = "fingerprint.json"
# The config groups a checkpoint's weights and optimizer state depend on. Everything else
# (epochs, evaluation, loggers, callbacks, augmentation, export) may change on a rerun.
FINGERPRINT_GROUPS = ("preprocess", "backbone", "neck", "head", "loss", "loop", "optimizer", "schedule")
FINGERPRINT_KEYS = ("data.image_size", "runtime.precision")
SAMPLE_IMAGES = 64  # the first training images (and labels) whose digest stands for the data


@dataclass(frozen=True)
class Position:
    """A data position: ``epoch`` in progress, ``batch`` batches of it trained, global ``step``."""

    epoch: int
    batch: int
    step: int


@dataclass(frozen=True)
class Segment:
    """One ``fit`` call: epochs ``[start_epoch, end_epoch)``; the first skips ``skip_batches``."""

    start_epoch: int
    end_epoch: int
    skip_batches: int = 0


def resume_segments(epoch: int, batch: int, epochs: int, steps_per_epoch: int) -> list[Segment]:
    """The ``fit`` calls that train from data position (``epoch``, ``batch``) to the end.

    Keras's ``fit`` has no partial first epoch, so a mid-epoch resume is two
    calls: the rest of the interrupted epoch (``steps_per_epoch - batch`` steps),
    then the whole epochs after it.
    """
    if batch >= steps_per_epoch:  # saved on the epoch's last batch
        epoch, batch = epoch + 1, 0
    if epoch >= epochs:
        return []
    if batch == 0:
        return [Segment(epoch, epochs)]
    segments = [Segment(epoch, epoch + 1, batch)]
    if epoch + 1 < epochs:
        segments.append(Segment(epoch + 1, epochs))
    return segments


@dataclass(frozen=True)
class ResumePlan:
    """What the runner does about the run folder's past, decided once."""

    restore_path: str | None          # the weights file to load before training, or None
    random_states: tuple | None       # the saved random-generator states that go with it
    start: Position                   # where training starts
    segments: tuple[Segment, ...]     # the fit calls still to run (none: every step is done)
    fingerprint: dict                 # this run's (written to checkpoints/ by the chief)
    accepted_changes: tuple[str, ...] = ()  # keys that differ, accepted by resume_changes=allow

    @property
    def fresh(self) -> bool:
        return self.restore_path is None or self.start.step == 0

    @property
    def restored_step(self) -> int | None:
        return None if self.restore_path is None else self.start.step


def resume_mode(cfg) -> str:
    """``trainer.resume``: auto, never, or an existing checkpoint path; anything else is one line."""
    value = str(cfg.trainer.get("resume", "auto"))
    if value in RESUME_MODES or os.path.exists(value):
        return value
    raise ConfigError(f"trainer.resume={value!r} is not auto, never or an existing checkpoint "
                      "(a run folder, its checkpoints/ folder or a ckpt-<step>.weights.h5 file)")


def plan_resume(cfg, job, run_dir: str) -> ResumePlan:
    """The plan for ``job`` in ``run_dir`` (checked: same batches, same fingerprint, or allowed)."""
    mode = resume_mode(cfg)
    if mode == "never":
        state = None
    elif mode == "auto":
        state = restorable_checkpoint(checkpoint_dir(run_dir))
    else:
        state = checkpoint_at(mode, job.steps_per_epoch)
    current = fingerprint(cfg, job)
    if state is None:
        start = Position(0, 0, 0)
        return ResumePlan(None, None, start, tuple(resume_segments(0, 0, job.epochs, job.steps_per_epoch)),
                          current)
    folder = state.get("folder", checkpoint_dir(run_dir))
    _check_same_batches(state, folder, job)
    accepted = _check_same_run(cfg, folder, current, job.runtime.is_chief)
    start = Position(int(state["epoch"]), int(state.get("batch", 0)), int(state.get("step", 0)))
    segments = resume_segments(start.epoch, start.batch, job.epochs, job.steps_per_epoch)
    saved_states = state.get("random_states")
    return ResumePlan(io.join(folder, state["file"]), tuple(saved_states) if saved_states is not None else None,
                      start, tuple(segments), current, accepted)


def _check_same_batches(state: dict, folder: str, job) -> None:
    """A resumed run must cut epochs into the same batches, or the data position is wrong."""
    for key, value in (("steps_per_epoch", job.steps_per_epoch), ("batch_size", job.batch_size)):
        saved = state.get(key)
        if saved is not None and int(saved) != int(value):
            raise ConfigError(
                f"the checkpoint in {folder} was trained with {key}={saved}, this run has "
                f"{value}; keep the same trainer settings to resume, or start fresh with "
                "trainer.resume=never (or another run.name)")


def _check_same_run(cfg, folder: str, current: dict, is_chief: bool) -> tuple[str, ...]:
    """The fingerprint keys that differ from the checkpoint's, refused unless allowed."""
    recorded = io.read_json(io.join(folder, FINGERPRINT), None)
    if not isinstance(recorded, dict):
        print(f"warning: {io.join(folder, FINGERPRINT)} is missing or unreadable; resuming without "
              "checking that the settings are the checkpoint's", flush=True)
        return ()
    if not is_chief:  # workers may read another shard of the data: the chief checks the sample
        recorded = {k: v for k, v in recorded.items() if k != "data.sample"}
        current = {k: v for k, v in current.items() if k != "data.sample"}
    changed = tuple(sorted(k for k in recorded.keys() | current.keys() if recorded.get(k) != current.get(k)))
    # trainer.resume_changes is refuse or allow (trainer.config.CHOICE_KEYS checked it)
    if changed and cfg.trainer.get("resume_changes", "refuse") != "allow":
        named = _named_changes(changed)
        shown = ", ".join(f"{k} ({_shown(recorded.get(k))} -> {_shown(current.get(k))})" for k in named[:6])
        more = f" and {len(named) - 6} more" if len(named) > 6 else ""
        raise ConfigError(
            f"resume refused: the checkpoint in {folder} was trained with other settings: {shown}{more}; "
            "rerun with its settings, start fresh with trainer.resume=never (or another run.name), "
            "or accept the change with trainer.resume_changes=allow")
    return changed


def _named_changes(changed: tuple[str, ...]) -> list[str]:
    """The keys worth naming: a component switched (``loss.name``) stands for all its keys."""
    switched = {key.rsplit(".", 1)[0] for key in changed if key.endswith(".name")}
    return sorted((k for k in changed if k.endswith(".name") or k.rsplit(".", 1)[0] not in switched),
                  key=lambda k: (not k.endswith(".name"), k))


def _shown(value) -> str:
    text = "unset" if value is None else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def fingerprint(cfg, job) -> dict:
    """What must not change when a run resumes, as flat ``group.key: value`` pairs."""
    flat = {}
    for group in FINGERPRINT_GROUPS:
        node = cfg.get(group)
        if node is not None:
            _flatten(OmegaConf.to_container(node, resolve=True), group, flat)
    for key in FINGERPRINT_KEYS:
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None:
            flat[key] = value
    flat["data.identities"] = int(job.source.num_classes)
    flat["data.images"] = int(job.source.num_examples)
    if job.runtime.is_chief:
        flat["data.sample"] = data_sample_digest(job.data)
    return flat


def _flatten(value, prefix: str, into: dict) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}", into)
    else:
        into[prefix] = list(value) if isinstance(value, (list, tuple)) else value


def data_sample_digest(data) -> str:
    """A digest of the first training images and their labels, in the source's fixed order.

    It changes when photos move between identities (the label map) or are replaced, which
    counts alone cannot see; reading the whole data set would cost an epoch.
    """
    import numpy as np

    digest = hashlib.sha1()
    for images, labels in data.train_batches(SAMPLE_IMAGES):
        digest.update(np.ascontiguousarray(images).tobytes())
        digest.update(np.asarray(labels, np.int64).tobytes())
        break
    return digest.hexdigest()[:16]


def write_fingerprint(run_dir: str, plan: ResumePlan) -> None:
    """Record the plan's fingerprint beside the checkpoints this run will write."""
    io.write_json(io.join(checkpoint_dir(run_dir), FINGERPRINT), plan.fingerprint)
