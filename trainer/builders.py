"""Turn a resolved config into the objects of a job (model parts, loop, optimizer)."""

from __future__ import annotations

import keras

from trainer.registry import (BACKBONES, HEADS, LOOPS, LOSSES, NECKS, OPTIMIZERS,
                              PREPROCESSORS, SCHEDULES, ConfigError, to_plain)


def build_embedding_model(cfg, image_size: int) -> keras.Model:
    """Pixels (0..255, RGB) → preprocess → backbone → neck → embedding (not normalised).

    The built-in parts are functional models of Keras's own layers, so the
    model (and its export) saves and loads without custom objects.
    """
    from models.weights import initialise_embedding_model, preprocess_for_weights

    input_shape = (image_size, image_size, 3)
    images = keras.Input(input_shape, name="image")
    # backbone.weights=<file>: the input convention those weights were trained with (one warning line
    # when cfg.preprocess disagrees); the factory loads the trunk, then the neck's share loads here.
    x = PREPROCESSORS.build(preprocess_for_weights(cfg.backbone, cfg.preprocess))(images)
    x = BACKBONES.build(cfg.backbone, input_shape=input_shape)(x)
    embedding = NECKS.build(cfg.neck)(x)
    model = keras.Model(images, embedding, name="embedding")
    initialise_embedding_model(model, cfg.backbone)
    return model


def build_head(cfg, loss, num_classes: int):
    """The head, with whatever the loss needs of it (e.g. sub-centres) merged in."""
    if cfg.get("head") is None:
        return None
    from losses.base import FaceLoss
    from models.heads.base import uses_labels

    node = to_plain(cfg.head)
    # What the loss needs of the head (sub-centres); a plain Keras loss (dotted path) needs nothing.
    node.update(loss.head_requirements() if isinstance(loss, FaceLoss) else {})
    # The global batch is a bound a sampling head needs when batches have no static size.
    trainer_node = cfg.get("trainer") or {}
    head = HEADS.build(node, num_classes=num_classes, global_batch_size=trainer_node.get("batch_size"))
    if uses_labels(head):
        _check_label_head(cfg, head, loss)
    return head


def _check_label_head(cfg, head, loss) -> None:
    """A head that computes the loss itself (Partial FC) takes margin losses on cosines only,
    in the supervised loop: one line now instead of a wrong loss later."""
    from models.heads.partial_fc import margin_loss_problem

    loop = cfg.get("loop")
    loop_name = loop.get("name") if loop is not None else None
    if loop_name not in (None, "supervised"):
        raise ConfigError(f"head={node_name(cfg.head)} trains with loop=supervised only, not loop={loop_name}")
    problem = margin_loss_problem(loss) if loss is not None else "there is no loss"
    if problem:
        raise ConfigError(f"head={node_name(cfg.head)} samples and shards the classes, so it needs a margin "
                          f"loss that changes only the target logit (arcface, cosface, combined, "
                          f"subcenter_arcface, curricularface, magface, adaface, elasticface_*, normface): "
                          f"{problem}")


def node_name(node) -> str:
    return str(node.get("name")) if node is not None else "?"


def build_loop(cfg, num_classes: int, image_size: int):
    loss = LOSSES.build(cfg.loss, num_classes=num_classes) if cfg.get("loss") is not None else None
    embedding_model = build_embedding_model(cfg, image_size)
    head = build_head(cfg, loss, num_classes)
    return LOOPS.build(cfg.loop, embedding_model=embedding_model, head=head, loss=loss,
                       num_classes=num_classes, config=cfg)


def build_optimizer(cfg, steps_per_epoch: int, total_steps: int):
    schedule = SCHEDULES.build(cfg.schedule, base_lr=cfg.optimizer.lr,
                               steps_per_epoch=steps_per_epoch, total_steps=total_steps)
    return OPTIMIZERS.build(cfg.optimizer, learning_rate=schedule)

