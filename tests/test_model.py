import pytest
import torch
import torch.nn.functional as F
from torchvision.models import resnet18

from segclass.config import VARIANTS, ModelConfig
from segclass.errors import PretrainedWeightsError
from segclass.model import ResNet18Encoder, SegClassNet, build_model, load_pretrained_encoder


@pytest.mark.parametrize("variant", VARIANTS)
def test_output_shapes(variant):
    net = SegClassNet(ModelConfig(num_classes=5, variant=variant))
    x = torch.randn(2, 3, 128, 128)
    assert net.encoder(x).shape == (2, 256, 8, 8)
    out = net(x)
    assert out.lowres_logits.shape == (2, 5, 16, 16)
    assert out.mask_logits.shape == (2, 5, 128, 128)
    assert out.class_logits.shape == (2, 5)
    assert net.forward_masks(x).shape == (2, 5, 128, 128)


def test_mask_logits_are_nearest_upsampled_lowres():
    net = SegClassNet(ModelConfig(num_classes=3)).eval()
    out = net(torch.randn(1, 3, 128, 128))
    assert torch.equal(out.mask_logits[:, :, ::8, ::8], out.lowres_logits)


def test_released_code_class_logits_are_spatial_max():
    net = SegClassNet(ModelConfig(num_classes=4, variant="released-code")).eval()
    out = net(torch.randn(3, 3, 128, 128))
    assert torch.allclose(out.class_logits, out.lowres_logits.amax(dim=(2, 3)))
    assert sum(p.numel() for p in net.cls_head.parameters()) == 0


def test_mean_softmax_class_probabilities_are_the_pixel_class_shares():
    net = SegClassNet(ModelConfig(num_classes=4, variant="mean-softmax")).eval()
    out = net(torch.randn(3, 3, 128, 128))
    assert torch.allclose(out.class_logits.softmax(1), out.lowres_logits.softmax(1).mean(dim=(2, 3)), atol=1e-6)
    assert torch.allclose(out.class_logits.exp().sum(1), torch.ones(3), atol=1e-5)  # log-probabilities already
    lowres = torch.full((1, 4, 16, 16), -50.0)
    lowres[0, 2, :12] = 50.0  # 12 of 16 rows confidently class 2, the rest class 0
    lowres[0, 0, 12:] = 50.0
    assert torch.allclose(net.cls_head(lowres).exp(), torch.tensor([[0.25, 0.0, 0.75, 0.0]]), atol=1e-6)
    assert sum(p.numel() for p in net.cls_head.parameters()) == 0


def test_model_sizes_of_the_variants():
    sizes = {v: sum(p.numel() for p in SegClassNet(ModelConfig(num_classes=4, variant=v)).parameters()) for v in VARIANTS}
    assert sizes["mean-softmax"] == sizes["released-code"] == sizes["paper"] - (4 * 8 + 2 * 8 + 8 * 4)


@pytest.mark.parametrize("variant", VARIANTS)
def test_same_seed_same_model_and_outputs(variant):
    x = torch.randn(2, 3, 128, 128)
    outputs = []
    for _ in range(2):
        torch.manual_seed(7)
        outputs.append(SegClassNet(ModelConfig(num_classes=4, variant=variant)).eval()(x))
    for a, b in zip(*outputs):
        assert torch.equal(a, b)


def _grad_norms(module):
    return [p.grad.abs().sum().item() if p.grad is not None else 0.0 for p in module.parameters()]


@pytest.mark.parametrize("variant", VARIANTS)
def test_classification_loss_reaches_encoder_and_seg_head(variant):
    net = SegClassNet(ModelConfig(num_classes=4, variant=variant)).train()
    out = net(torch.randn(4, 3, 128, 128))
    F.cross_entropy(out.class_logits, torch.tensor([0, 1, 2, 3])).backward()
    assert all(g > 0 for g in _grad_norms(net.cls_head))
    assert sum(_grad_norms(net.seg_head)) > 0
    assert sum(_grad_norms(net.encoder)) > 0


def test_segmentation_loss_does_not_touch_classification_head():
    net = SegClassNet(ModelConfig(num_classes=4)).train()
    running_mean = net.cls_head.bn.running_mean.clone()
    logits = net.forward_masks(torch.randn(4, 3, 128, 128))
    F.cross_entropy(logits, torch.randint(0, 4, (4, 128, 128))).backward()
    assert all(p.grad is None for p in net.cls_head.parameters())
    assert sum(_grad_norms(net.encoder)) > 0
    # step 1 never runs the classification head, so its BatchNorm statistics stay put
    assert torch.equal(net.cls_head.bn.running_mean, running_mean)


def test_pretrained_weights_load_from_local_file(tmp_path):
    reference = resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    net = build_model(ModelConfig(num_classes=4), str(path))
    assert torch.equal(net.encoder.layer3[0].conv1.weight, reference.layer3[0].conv1.weight)
    assert torch.equal(net.encoder.bn1.running_var, reference.bn1.running_var)


def test_pretrained_missing_file_names_it(tmp_path):
    with pytest.raises(PretrainedWeightsError, match="nope.pth"):
        load_pretrained_encoder(ResNet18Encoder(), tmp_path / "nope.pth")


def test_pretrained_mismatched_keys_name_file(tmp_path):
    state = resnet18(weights=None).state_dict()
    state.pop("layer2.0.conv1.weight")
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(PretrainedWeightsError, match="broken.pth.*missing keys.*layer2.0.conv1.weight"):
        load_pretrained_encoder(ResNet18Encoder(), path)


def test_pretrained_garbage_file(tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(PretrainedWeightsError, match="garbage.pth"):
        load_pretrained_encoder(ResNet18Encoder(), path)


def test_random_init_is_logged_loudly(caplog):
    with caplog.at_level("WARNING"):
        build_model(ModelConfig(num_classes=4), None)
    assert "RANDOM" in caplog.text


def test_one_head_registry_feeds_the_cli_the_model_and_the_help():
    from segclass.config import CLASSIFICATION_HEADS, VARIANTS, variants_help
    from segclass.model.net import HEAD_BUILDERS

    assert tuple(HEAD_BUILDERS) == VARIANTS == tuple(CLASSIFICATION_HEADS)  # a new head is added in both or fails
    for name in VARIANTS:
        assert f"'{name}': " in variants_help()
