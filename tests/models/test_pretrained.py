"""Released insightface weights load into our IResNet / MobileFaceNet and compute what PyTorch computes.

The PyTorch models are written here from insightface's ``arcface_torch``
(``backbones/iresnet.py``, ``backbones/mobilefacenet.py``), get random weights
with non-trivial BatchNorm statistics and PReLU slopes, and are saved as a
state dict and exported to ONNX; both files are imported through
``backbone.weights`` and the embeddings compared on the same images.
Our own exports initialising a backbone, freezing and the input convention need no torch.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import keras

from models import weights as pretrained
from trainer.registry import BACKBONES, NECKS, PREPROCESSORS, ConfigError

TOLERANCE = 1e-4  # max absolute difference of L2-normalised embeddings


# -- the PyTorch reference, as published -------------------------------------------------------

def torch_models():
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class IBasicBlock(nn.Module):
        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-05)
            self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes, eps=1e-05)
            self.prelu = nn.PReLU(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes, eps=1e-05)
            self.downsample = downsample

        def forward(self, x):
            out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
            return out + (x if self.downsample is None else self.downsample(x))

    class IResNet(nn.Module):
        def __init__(self, layers, widths=(64, 128, 256, 512), num_features=512, fc_scale=7 * 7):
            super().__init__()
            self.inplanes = widths[0]
            self.conv1 = nn.Conv2d(3, self.inplanes, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(self.inplanes, eps=1e-05)
            self.prelu = nn.PReLU(self.inplanes)
            self.layer1 = self._make_layer(widths[0], layers[0])
            self.layer2 = self._make_layer(widths[1], layers[1])
            self.layer3 = self._make_layer(widths[2], layers[2])
            self.layer4 = self._make_layer(widths[3], layers[3])
            self.bn2 = nn.BatchNorm2d(widths[3], eps=1e-05)
            self.dropout = nn.Dropout(p=0.0)
            self.fc = nn.Linear(widths[3] * fc_scale, num_features)
            self.features = nn.BatchNorm1d(num_features, eps=1e-05)
            nn.init.constant_(self.features.weight, 1.0)
            self.features.weight.requires_grad = False

        def _make_layer(self, planes, blocks, stride=2):
            downsample = None
            if stride != 1 or self.inplanes != planes:
                downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False),
                                           nn.BatchNorm2d(planes, eps=1e-05))
            layers = [IBasicBlock(self.inplanes, planes, stride, downsample)]
            self.inplanes = planes
            layers += [IBasicBlock(planes, planes) for _ in range(1, blocks)]
            return nn.Sequential(*layers)

        def forward(self, x):
            x = self.prelu(self.bn1(self.conv1(x)))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            x = self.dropout(torch.flatten(self.bn2(x), 1))
            return self.features(self.fc(x))

    class ConvBlock(nn.Module):
        def __init__(self, in_c, out_c, kernel=(1, 1), stride=(1, 1), padding=(0, 0), groups=1, linear=False):
            super().__init__()
            layers = [nn.Conv2d(in_c, out_c, kernel, groups=groups, stride=stride, padding=padding, bias=False),
                      nn.BatchNorm2d(num_features=out_c)]
            self.layers = nn.Sequential(*(layers if linear else layers + [nn.PReLU(num_parameters=out_c)]))

        def forward(self, x):
            return self.layers(x)

    class DepthWise(nn.Module):
        def __init__(self, in_c, out_c, residual=False, kernel=(3, 3), stride=(2, 2), padding=(1, 1), groups=1):
            super().__init__()
            self.residual = residual
            self.layers = nn.Sequential(
                ConvBlock(in_c, out_c=groups, kernel=(1, 1), padding=(0, 0), stride=(1, 1)),
                ConvBlock(groups, groups, groups=groups, kernel=kernel, padding=padding, stride=stride),
                ConvBlock(groups, out_c, kernel=(1, 1), padding=(0, 0), stride=(1, 1), linear=True))

        def forward(self, x):
            return x + self.layers(x) if self.residual else self.layers(x)

    class Residual(nn.Module):
        def __init__(self, c, num_block, groups):
            super().__init__()
            self.layers = nn.Sequential(*[DepthWise(c, c, True, (3, 3), (1, 1), (1, 1), groups)
                                          for _ in range(num_block)])

        def forward(self, x):
            return self.layers(x)

    class GDC(nn.Module):
        def __init__(self, embedding_size, kernel):
            super().__init__()
            self.layers = nn.Sequential(ConvBlock(512, 512, groups=512, kernel=kernel, linear=True),
                                        nn.Flatten(), nn.Linear(512, embedding_size, bias=False),
                                        nn.BatchNorm1d(embedding_size))

        def forward(self, x):
            return self.layers(x)

    class MobileFaceNet(nn.Module):
        def __init__(self, num_features=512, blocks=(1, 4, 6, 2), scale=2, gdc_kernel=(7, 7)):
            super().__init__()
            width = 64 * scale
            self.layers = nn.ModuleList([ConvBlock(3, width, kernel=(3, 3), stride=(2, 2), padding=(1, 1))])
            if blocks[0] == 1:
                self.layers.append(ConvBlock(width, width, kernel=(3, 3), stride=(1, 1), padding=(1, 1), groups=64))
            else:
                self.layers.append(Residual(width, blocks[0], 128))
            self.layers.extend([
                DepthWise(width, width, groups=128), Residual(width, blocks[1], 128),
                DepthWise(width, 2 * width, groups=256), Residual(2 * width, blocks[2], 256),
                DepthWise(2 * width, 2 * width, groups=512), Residual(2 * width, blocks[3], 256)])
            self.conv_sep = ConvBlock(2 * width, 512)
            self.features = GDC(num_features, gdc_kernel)

        def forward(self, x):
            for layer in self.layers:
                x = layer(x)
            return self.features(self.conv_sep(x))

    return torch, IResNet, MobileFaceNet


def randomise(torch, net, seed=1):
    """Non-trivial BatchNorm statistics, affine parameters and PReLU slopes (init makes them trivial)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.uniform_(-0.2, 0.2, generator=generator)
                module.running_mean.uniform_(-0.2, 0.2, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)
            elif isinstance(module, torch.nn.PReLU):
                module.weight.uniform_(0.0, 0.5, generator=generator)
            elif isinstance(module, torch.nn.Linear) and module.bias is not None:
                module.bias.uniform_(-0.2, 0.2, generator=generator)
        if hasattr(net, "fc"):
            net.features.weight.fill_(1.0)  # insightface fixes it at 1
    return net.eval()


def torch_embeddings(torch, net, pixels):
    """insightface's inference: RGB, (x - 127.5) / 127.5, NCHW."""
    with torch.no_grad():
        return net(torch.from_numpy(((pixels - 127.5) / 127.5).transpose(0, 3, 1, 2).copy())).numpy()


def save_both(torch, net, folder, size, dynamo=False):
    state_dict = folder / "backbone.pth"
    torch.save(net.state_dict(), state_dict)
    onnx_file = folder / "backbone.onnx"
    example = torch.zeros(2, 3, size, size)
    torch.onnx.export(net, example, str(onnx_file), input_names=["input"], output_names=["embedding"],
                      dynamo=dynamo, **({} if dynamo else {"dynamic_axes": {"input": {0: "batch"}}}))
    return {"pth": str(state_dict), "onnx": str(onnx_file)}


def embedding_model(backbone_node, neck_node, size, preprocess=None):
    """What the builder assembles, with ``models.weights``'s two steps (trunk in the factory, then the neck)."""
    preprocess = pretrained.preprocess_for_weights(
        backbone_node, preprocess or {"name": "standard", "mean": 127.5, "std": 127.5, "channel_order": "rgb"})
    images = keras.Input((size, size, 3), name="image")
    x = PREPROCESSORS.build(preprocess)(images)
    x = BACKBONES.build(backbone_node, input_shape=(size, size, 3))(x)
    model = keras.Model(images, NECKS.build(neck_node)(x), name="embedding")
    pretrained.initialise_embedding_model(model, backbone_node)
    return model


def unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def pixels(size, count=3, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (count, size, size, 3)).astype("float32")


SMALL_IRESNET = {"name": "iresnet", "layers": [1, 2, 1, 1], "widths": [8, 16, 16, 32], "stem_width": 8}

# A torch-free check for CI: an ONNX file made offline by PyTorch's exporter (as insightface's were), and
# PyTorch's embeddings of the images stored beside it. Remake with: python tests/models/test_pretrained.py
GOLDEN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "golden",
                      "insightface_iresnet_small")
GOLDEN_IRESNET = {"name": "iresnet", "layers": [1, 2, 1, 1], "widths": [8, 8, 16, 16], "stem_width": 8}


def write_golden(prefix: str = GOLDEN, size: int = 32) -> None:
    """2x2 maps before the E neck, so the FC's NCHW → NHWC row order is exercised too."""
    torch, IResNet, _ = torch_models()
    torch.manual_seed(0)
    net = randomise(torch, IResNet(GOLDEN_IRESNET["layers"], GOLDEN_IRESNET["widths"], num_features=8,
                                   fc_scale=(size // 16) ** 2))
    images = np.round(pixels(size, count=4, seed=5)).astype(np.uint8)
    torch.onnx.export(net, torch.zeros(1, 3, size, size), prefix + ".onnx", input_names=["input"],
                      output_names=["embedding"], dynamo=False, dynamic_axes={"input": {0: "batch"}})
    np.savez(prefix + ".npz", images=images, embeddings=torch_embeddings(torch, net, images.astype(np.float32)),
             torch_version=str(torch.__version__))


def test_an_insightface_style_onnx_file_imports_without_torch():
    pytest.importorskip("onnx")
    golden = np.load(GOLDEN + ".npz")
    images, expected = golden["images"].astype(np.float32), golden["embeddings"]
    model = embedding_model({**GOLDEN_IRESNET, "weights": GOLDEN + ".onnx"}, {"name": "e", "embedding_dim": 8},
                            images.shape[1])
    got = np.asarray(model(images, training=False))
    assert np.max(np.abs(unit(got) - unit(expected))) <= TOLERANCE


@pytest.fixture(scope="module")
def small_iresnet_files(tmp_path_factory):
    torch, IResNet, _ = torch_models()
    torch.manual_seed(0)
    size = 32
    net = randomise(torch, IResNet(SMALL_IRESNET["layers"], SMALL_IRESNET["widths"], num_features=16,
                                   fc_scale=(size // 16) ** 2))
    files = save_both(torch, net, tmp_path_factory.mktemp("iresnet"), size)
    return files, torch_embeddings(torch, net, pixels(size)), size


@pytest.mark.parametrize("kind", ["pth", "onnx"])
def test_iresnet_state_dict_and_onnx_give_pytorchs_embeddings(small_iresnet_files, kind):
    files, expected, size = small_iresnet_files
    model = embedding_model({**SMALL_IRESNET, "weights": files[kind]}, {"name": "e", "embedding_dim": 16}, size)
    got = np.asarray(model(pixels(size), training=False))
    assert np.max(np.abs(unit(got) - unit(expected))) <= TOLERANCE
    assert np.max(np.abs(got - expected)) <= 1e-3 * max(1.0, np.max(np.abs(expected)))  # before normalising too
    random = embedding_model(SMALL_IRESNET, {"name": "e", "embedding_dim": 16}, size)
    assert np.max(np.abs(unit(random(pixels(size), training=False)) - unit(expected))) > 0.05


def test_mobilefacenet_state_dict_and_onnx_give_pytorchs_embeddings(tmp_path):
    torch, _, MobileFaceNet = torch_models()
    torch.manual_seed(0)
    size = 32  # 2x2 before the GDC neck
    net = randomise(torch, MobileFaceNet(num_features=16, blocks=(2, 1, 1, 1), scale=1, gdc_kernel=(2, 2)))
    files = save_both(torch, net, tmp_path, size)
    expected = torch_embeddings(torch, net, pixels(size))
    for kind, path in files.items():
        node = {"name": "mobilefacenet", "blocks": [2, 1, 1, 1], "scale": 1, "weights": path}
        model = embedding_model(node, {"name": "gdc", "embedding_dim": 16}, size)
        got = np.asarray(model(pixels(size), training=False))
        assert np.max(np.abs(unit(got) - unit(expected))) <= TOLERANCE, kind


def test_a_file_of_another_depth_is_one_line_naming_the_depth(small_iresnet_files):
    files, _, size = small_iresnet_files
    with pytest.raises(ConfigError, match="the file has 5 residual blocks, this backbone 4"):
        BACKBONES.build({**SMALL_IRESNET, "layers": [1, 1, 1, 1], "weights": files["pth"]},
                        input_shape=(size, size, 3))


def test_another_embedding_size_loads_the_trunk_and_leaves_the_neck_random(small_iresnet_files, capsys):
    files, _, size = small_iresnet_files
    node = {**SMALL_IRESNET, "weights": files["pth"]}
    model = embedding_model(node, {"name": "e", "embedding_dim": 8}, size)
    assert "the neck starts random" in capsys.readouterr().err
    loaded = model.get_layer("iresnet").get_layer("stem_conv").kernel
    reference = BACKBONES.build(node, input_shape=(size, size, 3)).get_layer("stem_conv").kernel
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded), keras.ops.convert_to_numpy(reference))


def test_the_weights_convention_replaces_a_disagreeing_preprocess_with_one_warning(small_iresnet_files, capsys):
    files, expected, size = small_iresnet_files
    bgr = {"name": "standard", "mean": 0.0, "std": 1.0, "channel_order": "bgr"}
    model = embedding_model({**SMALL_IRESNET, "weights": files["pth"]}, {"name": "e", "embedding_dim": 16}, size,
                            preprocess=bgr)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "RGB (x - 127.5) / 127.5" in warnings[0] and "BGR" in warnings[0]
    got = np.asarray(model(pixels(size), training=False))
    assert np.max(np.abs(unit(got) - unit(expected))) <= TOLERANCE  # the weights' convention was used


def test_an_onnx_file_that_normalises_its_input_sets_that_convention(tmp_path):
    torch, IResNet, _ = torch_models()
    torch.manual_seed(0)
    net = randomise(torch, IResNet([1, 1, 1, 1], (8, 8, 8, 8), num_features=8, fc_scale=1))

    class RawPixels(torch.nn.Module):  # older insightface ONNX files: Sub, Mul in the graph
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner((x - 127.5) * 0.0078125)

    path = tmp_path / "raw.onnx"
    torch.onnx.export(RawPixels(net), torch.zeros(1, 3, 16, 16), str(path), dynamo=False)
    convention = pretrained.source(path).convention
    assert convention.mean == (127.5,) * 3 and convention.std == (128.0,) * 3


def test_our_own_export_initialises_backbone_and_neck(tmp_path):
    from trainer.export.model_files import exportable

    size = 32
    node = {**SMALL_IRESNET}
    source = embedding_model(node, {"name": "e", "embedding_dim": 16}, size)
    rng = np.random.default_rng(3)
    for variable in source.weights:  # every weight differs from a fresh model's
        variable.assign(rng.normal(0.0, 0.1, variable.shape).astype("float32")
                        + (1.0 if variable.path.endswith(("gamma", "moving_variance")) else 0.0))
    path = str(tmp_path / "embedding.keras")
    exportable(source).save(path)
    model = embedding_model({**node, "weights": path}, {"name": "e", "embedding_dim": 16}, size)
    images = pixels(size)
    np.testing.assert_allclose(np.asarray(model(images, training=False)),
                               np.asarray(source(images, training=False)), atol=1e-5)


def test_an_export_of_another_backbone_is_refused_in_one_line(tmp_path):
    from trainer.export.model_files import exportable

    size = 32
    source = embedding_model({"name": "tiny"}, {"name": "gap", "embedding_dim": 8}, size)
    path = str(tmp_path / "embedding.keras")
    exportable(source).save(path)
    with pytest.raises(ConfigError, match="holds no backbone 'iresnet'.*tiny"):
        BACKBONES.build({**SMALL_IRESNET, "weights": path}, input_shape=(size, size, 3))


def test_freeze_stages_freezes_the_stem_and_the_first_stages():
    model = BACKBONES.build({**SMALL_IRESNET, "freeze_stages": 2}, input_shape=(32, 32, 3))
    frozen = {layer.name for layer in model.layers if not layer.trainable}
    assert {"stem_conv", "stem_bn", "stem_prelu", "stage1_block1", "stage2_block1", "stage2_block2"} <= frozen
    assert not {"stage3_block1", "stage4_block1"} & frozen
    everything = BACKBONES.build(SMALL_IRESNET, input_shape=(32, 32, 3))
    assert 0 < len(model.trainable_weights) < len(everything.trainable_weights)
    mobile = BACKBONES.build({"name": "mobilefacenet", "blocks": [1, 1, 1, 1], "scale": 1, "freeze_stages": 1},
                             input_shape=(32, 32, 3))
    assert not mobile.get_layer("stem_dw_conv").trainable and mobile.get_layer("stage2_down_expand_conv").trainable
    with pytest.raises(ConfigError, match="freeze_stages=5"):
        BACKBONES.build({**SMALL_IRESNET, "freeze_stages": 5}, input_shape=(32, 32, 3))


def test_missing_or_foreign_files_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        BACKBONES.build({**SMALL_IRESNET, "weights": str(tmp_path / "none.pth")}, input_shape=(32, 32, 3))
    foreign = tmp_path / "weights.npz"
    foreign.write_bytes(b"not weights")
    with pytest.raises(ConfigError, match="backbone.weights"):
        BACKBONES.build({**SMALL_IRESNET, "weights": str(foreign)}, input_shape=(32, 32, 3))


@pytest.mark.e2e
def test_iresnet_from_the_new_onnx_exporter(tmp_path):
    """torch.onnx's torch.export-based exporter (the default since PyTorch 2.9) folds differently."""
    pytest.importorskip("onnxscript")
    torch, IResNet, _ = torch_models()
    torch.manual_seed(0)
    size = 32
    net = randomise(torch, IResNet(SMALL_IRESNET["layers"], SMALL_IRESNET["widths"], num_features=16,
                                   fc_scale=(size // 16) ** 2))
    files = save_both(torch, net, tmp_path, size, dynamo=True)
    expected = torch_embeddings(torch, net, pixels(size))
    model = embedding_model({**SMALL_IRESNET, "weights": files["onnx"]}, {"name": "e", "embedding_dim": 16}, size)
    assert np.max(np.abs(unit(model(pixels(size), training=False)) - unit(expected))) <= TOLERANCE


@pytest.mark.e2e
def test_iresnet50_state_dict_and_onnx_at_112(tmp_path):
    """The real size: insightface's iresnet50 with a 512-d E neck (25,088-wide flatten)."""
    torch, IResNet, _ = torch_models()
    torch.manual_seed(0)
    net = randomise(torch, IResNet((3, 4, 14, 3)))
    files = save_both(torch, net, tmp_path, 112)
    images = pixels(112, count=2)
    expected = torch_embeddings(torch, net, images)
    for kind, path in files.items():
        model = embedding_model({"name": "iresnet50", "weights": path}, {"name": "e"}, 112)
        got = np.asarray(model(images, training=False))
        assert np.max(np.abs(unit(got) - unit(expected))) <= TOLERANCE, kind


if __name__ == "__main__":  # offline, with torch: remake the golden ONNX file and its embeddings
    write_golden()
    print(f"wrote {GOLDEN}.onnx and {GOLDEN}.npz")


def test_a_state_dict_with_an_affine_free_batchnorm_is_one_config_error():
    from models.weights.sources import state_dict_units

    with pytest.raises(ConfigError, match="is not a conv, BatchNorm, PReLU or linear layer"):
        state_dict_units({"bn.running_mean": np.zeros(3), "bn.running_var": np.ones(3)})
