"""Multi-exit ResNet, projection head and their wrappers (amecam_lib.models)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from amecam_lib.models.multi_exit import ExitLogit, ExitOutput, MultiExitResNet, upsample_maps
from amecam_lib.models.projection import ProjectionHead, SupConNet, load_pretrained_backbone


@pytest.mark.parametrize("size, map_sides", [(64, (16, 8, 4, 2)), (128, (32, 16, 8, 4)), (240, (60, 30, 15, 8))])
def test_exit_shapes_and_dtypes(size, map_sides):
    net = MultiExitResNet().eval()
    with torch.no_grad():
        out = net(torch.rand(2, 1, size, size))
    assert isinstance(out, ExitOutput)
    assert out.logits.shape == (2, 4) and out.logits.dtype == torch.float32
    assert [tuple(m.shape) for m in out.maps] == [(2, 1, side, side) for side in map_sides]
    assert all(m.dtype == torch.float32 for m in out.maps)


def test_exit_logit_is_gap_of_its_map():
    net = MultiExitResNet().eval()
    with torch.no_grad():
        out = net(torch.rand(3, 1, 64, 64))
    for index, exit_map in enumerate(out.maps):
        torch.testing.assert_close(out.logits[:, index], exit_map.mean(dim=(1, 2, 3)))


def test_resnet18_channels_and_exit_convs():
    net = MultiExitResNet("resnet18")
    assert net.backbone.channels == (64, 128, 256, 512)
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.bias is not None) for c in net.exits] == [
        (64, 1, (1, 1), True), (128, 1, (1, 1), True), (256, 1, (1, 1), True), (512, 1, (1, 1), True)]
    assert len(net.stages) == 4


def test_resnet50_is_just_the_arch_parameter():
    net = MultiExitResNet("resnet50").eval()
    assert net.backbone.channels == (256, 512, 1024, 2048)
    with torch.no_grad():
        out = net(torch.rand(1, 1, 64, 64))
    assert out.logits.shape == (1, 4)
    assert net.encode(torch.rand(1, 1, 64, 64)).shape == (1, 2048)


def test_instance_norm_option_replaces_batch_norm():
    net = MultiExitResNet(norm="instance")
    norms = [m for m in net.modules() if isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d))]
    assert norms and all(isinstance(m, nn.InstanceNorm2d) and not m.affine for m in norms)
    out = net(torch.rand(2, 1, 64, 64))
    assert torch.isfinite(out.logits).all()


@pytest.mark.parametrize("model", [MultiExitResNet(), MultiExitResNet("resnet50"), SupConNet()],
                         ids=["multi_exit18", "multi_exit50", "supcon18"])
def test_no_inplace_relu_anywhere(model):
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert relus and not any(m.inplace for m in relus)


def test_grey_input_equals_three_identical_channels():
    grey = MultiExitResNet(in_channels=1).eval()
    colour = MultiExitResNet(in_channels=3).eval()
    colour.load_state_dict(grey.state_dict())
    images = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(grey(images).logits, colour(images.repeat(1, 3, 1, 1)).logits)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="arch"):
        MultiExitResNet("vgg16")
    with pytest.raises(ValueError, match="norm"):
        MultiExitResNet(norm="group")
    with pytest.raises(ValueError, match="in_channels"):
        MultiExitResNet(in_channels=2)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        MultiExitResNet()(torch.rand(2, 3, 64, 64))
    with pytest.raises(ValueError, match="exit_index"):
        ExitLogit(MultiExitResNet(), exit_index=5)


def test_feature_maps_and_encode():
    net = MultiExitResNet().eval()
    images = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        stage_outputs = net.feature_maps(images)
        pooled = net.encode(images)
    assert [tuple(f.shape) for f in stage_outputs] == [(2, 64, 16, 16), (2, 128, 8, 8), (2, 256, 4, 4), (2, 512, 2, 2)]
    torch.testing.assert_close(pooled, stage_outputs[-1].mean(dim=(2, 3)))


def test_upsample_maps_bilinear_by_hand():
    # A 2 x 2 map [[0, 1], [0, 1]] upsampled to 4 x 4 with align_corners=False: each row is
    # 0, 0.25, 0.75, 1 (edge pixels clamp, inner ones interpolate at 1/4 and 3/4).
    exit_map = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])
    upsampled = upsample_maps([exit_map, 2 * exit_map], 4)
    assert upsampled.shape == (1, 2, 4, 4)
    expected_row = torch.tensor([0.0, 0.25, 0.75, 1.0])
    torch.testing.assert_close(upsampled[0, 0], expected_row.expand(4, 4))
    torch.testing.assert_close(upsampled[0, 1], 2 * expected_row.expand(4, 4))


def test_upsample_maps_of_network_output():
    net = MultiExitResNet().eval()
    with torch.no_grad():
        out = net(torch.rand(3, 1, 64, 64))
    assert upsample_maps(out.maps, 64).shape == (3, 4, 64, 64)
    with pytest.raises(ValueError, match="exit map 2"):
        upsample_maps([out.maps[0], out.maps[1][:2]], 64)
    with pytest.raises(ValueError, match="empty"):
        upsample_maps([], 64)


def test_exit_logit_wrapper_runs_grad_cam():
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    net = MultiExitResNet().eval()
    wrapper = ExitLogit(net, exit_index=4)
    images = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(wrapper(images), net(images).logits[:, 3:4])
    with GradCAM(model=wrapper, target_layers=[net.stages[-1]]) as cam:
        heatmaps = cam(input_tensor=images, targets=[ClassifierOutputTarget(0)] * 2)
    assert heatmaps.shape == (2, 64, 64)
    assert ((heatmaps >= 0) & (heatmaps <= 1)).all()


def test_projection_head_and_supcon_net():
    head = ProjectionHead(512, 128)
    assert [type(m) for m in head.layers] == [nn.Linear, nn.ReLU, nn.Linear]
    assert head(torch.rand(4, 512)).shape == (4, 128)
    net = SupConNet(projection_dim=32)
    assert net(torch.rand(2, 1, 64, 64)).shape == (2, 32)
    assert SupConNet("resnet50").head.layers[0].in_features == 2048


def test_pretrained_backbone_loads_into_multi_exit_net():
    pretrained = SupConNet()
    with torch.no_grad():
        for parameter in pretrained.parameters():
            parameter.add_(0.5)
    net = MultiExitResNet()
    exits_before = [conv.weight.clone() for conv in net.exits]
    copied = load_pretrained_backbone(net, pretrained.state_dict())
    assert copied == len(net.backbone.state_dict())
    for name, tensor in net.backbone.state_dict().items():
        torch.testing.assert_close(tensor, pretrained.backbone.state_dict()[name])
    for before, conv in zip(exits_before, net.exits):
        torch.testing.assert_close(before, conv.weight)
    with pytest.raises(ValueError, match="does not fit"):
        load_pretrained_backbone(MultiExitResNet("resnet50"), pretrained.state_dict())
    with pytest.raises(ValueError, match="backbone"):
        load_pretrained_backbone(net, {"head.layers.0.weight": torch.zeros(1)})


def test_authors_head_without_hidden_bias_of_any_size_loads_into_multi_exit_net():
    head = ProjectionHead(512, 256, hidden_bias=False)
    assert head.layers[0].bias is None and head.layers[2].bias is not None
    assert head(torch.rand(3, 512)).shape == (3, 256)
    pretrained = SupConNet(projection_dim=256, hidden_bias=False)
    assert pretrained(torch.rand(2, 1, 48, 40)).shape == (2, 256)
    assert "head.layers.0.bias" not in pretrained.state_dict()
    for state in (pretrained.state_dict(), SupConNet(projection_dim=7).state_dict()):
        net = MultiExitResNet()
        assert load_pretrained_backbone(net, state) == len(net.backbone.state_dict())
        for name, tensor in net.backbone.state_dict().items():
            torch.testing.assert_close(tensor, state[f"backbone.{name}"])


def test_exit_logits_have_grad_to_backbone():
    net = MultiExitResNet()
    net(torch.rand(2, 1, 64, 64)).logits.sum().backward()
    assert net.backbone.conv1.weight.grad is not None
    assert all(conv.weight.grad is not None and math.isfinite(conv.weight.grad.sum().item()) for conv in net.exits)
