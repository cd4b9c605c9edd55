"""keras.applications families as face backbones (feature maps, no classifier top).

``weights=None`` (random init) by default; a path to a local ``.weights.h5``
file loads it (no download happens unless you pass ``"imagenet"`` yourself).
Built-in input rescaling is switched off: the framework's ``preprocess`` layer
normalises pixels before the backbone. Use the ``gap`` or ``e`` neck.
"""

from __future__ import annotations

import os

import keras

from models.backbones._common import check_input_shape
from trainer.registry import BACKBONES, ConfigError

MINIMUM_INPUT = 32  # keras.applications refuses smaller inputs


def build_application(builder, name: str, input_shape, weights, remat: bool,
                      **options) -> keras.Model:
    check_input_shape(input_shape, name, minimum=MINIMUM_INPUT)
    if remat:
        raise ConfigError(f"backbone '{name}' has no remat option (keras.applications builds "
                          "it); use iresnet* or vit_* for gradient checkpointing")
    if weights not in (None, "imagenet") and not os.path.isfile(str(weights)):
        raise ConfigError(f"backbone '{name}': weights file '{weights}' does not exist; "
                          "give a local .weights.h5 path, an exported embedding.keras or weights=null")
    from models import weights as pretrained

    exported = weights if pretrained.imports_weights(weights) else None  # our own embedding.keras
    if exported and not str(exported).lower().endswith(".keras"):
        raise ConfigError(f"backbone '{name}': weights={weights} is a PyTorch/ONNX file; those are read for "
                          "iresnet* and mobilefacenet only (here: a .weights.h5 or an embedding.keras)")
    model = builder(include_top=False, weights=None if exported else weights,
                    input_shape=tuple(input_shape), **options)
    model = keras.Model(model.inputs[0], model.outputs[0], name=name)
    if exported:
        pretrained.load_backbone_weights(model, exported, "keras_app")
    return model


def _register(name: str, builder_name: str, **options):
    def factory(input_shape=(112, 112, 3), weights=None, remat: bool = False) -> keras.Model:
        builder = getattr(keras.applications, builder_name)
        return build_application(builder, name, input_shape, weights, remat, **options)

    factory.minimum_input_size = lambda **_: MINIMUM_INPUT
    factory.__name__ = name
    factory.__doc__ = f"keras.applications.{builder_name} trunk (include_top=False)."
    return BACKBONES.register(name)(factory)


resnet50 = _register("resnet50", "ResNet50")
mobilenetv3_small = _register("mobilenetv3_small", "MobileNetV3Small", include_preprocessing=False)
mobilenetv3_large = _register("mobilenetv3_large", "MobileNetV3Large", include_preprocessing=False)
efficientnetv2_b0 = _register("efficientnetv2_b0", "EfficientNetV2B0", include_preprocessing=False)
efficientnetv2_b1 = _register("efficientnetv2_b1", "EfficientNetV2B1", include_preprocessing=False)
efficientnetv2_b2 = _register("efficientnetv2_b2", "EfficientNetV2B2", include_preprocessing=False)
efficientnetv2_b3 = _register("efficientnetv2_b3", "EfficientNetV2B3", include_preprocessing=False)
efficientnetv2_s = _register("efficientnetv2_s", "EfficientNetV2S", include_preprocessing=False)
convnext_tiny = _register("convnext_tiny", "ConvNeXtTiny", include_preprocessing=False)
