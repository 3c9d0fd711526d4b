"""Tests for cellzoo.inference: padding, sliding windows, flip TTA and its inverse, ensembles, tiling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from cellzoo.errors import InputError
from cellzoo.inference import (
    FlipTTA,
    WholeImageInferer,
    WholeImagePredictor,
    flow_flip_inverse,
    halo_tiles,
    stride_padding,
)


def fixed_conv(kernels: list[np.ndarray]) -> nn.Conv2d:
    """A bias-free 1 -> len(kernels) conv with fixed 3x3 kernels (zero padding keeps the size)."""
    conv = nn.Conv2d(1, len(kernels), 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(np.stack(kernels)[:, None], dtype=torch.float32))
    return conv


def flow_net() -> nn.Conv2d:
    """Outputs [d/dy, d/dx, identity]: a synthetic [flow_y, flow_x, cellprob] whose flows flip sign."""
    dy = np.array([[0, -0.5, 0], [0, 0, 0], [0, 0.5, 0]])
    identity = np.zeros((3, 3))
    identity[1, 1] = 1
    return fixed_conv([dy, dy.T, identity])


def random_cnn(seed: int = 0) -> nn.Sequential:
    """Three 3x3 convs with ReLU: receptive-field radius 3 px, no symmetry."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
        nn.Conv2d(4, 2, 3, padding=1),
    )


class Constant(nn.Module):
    """Outputs one channel filled with `value`."""

    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, x: Tensor) -> Tensor:
        return torch.full_like(x[:, :1], self.value)


class Affine(nn.Module):
    """Pointwise scale * x + shift (cheaper on the CPU than a 1x1 conv on a single channel)."""

    def __init__(self, scale: float, shift: float):
        super().__init__()
        self.scale, self.shift = scale, shift

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale + self.shift


class ShapeSpy(nn.Identity):
    """Identity that records the spatial shape of every batch of windows it sees."""

    def __init__(self):
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: Tensor) -> Tensor:
        self.shapes.append(tuple(x.shape[2:]))
        return x


def smooth_image(shape: tuple[int, ...], seed: int = 0) -> Tensor:
    """A (1, *shape) random image with structure at several scales."""
    rng = np.random.default_rng(seed)
    return torch.tensor(rng.random((1, *shape)), dtype=torch.float32)


def test_identity_network_returns_input():
    image = smooth_image((70, 90))
    predictor = WholeImagePredictor(nn.Identity(), roi_size=(32, 32), overlap=0.5, progress=False)
    out = predictor(image)
    assert out.shape == (1, 70, 90) and out.dtype == torch.float32 and out.device.type == "cpu"
    torch.testing.assert_close(out, image, atol=1e-5, rtol=0)


def test_numpy_uint16_input_is_converted():
    image = np.random.default_rng(1).integers(0, 60000, size=(2, 40, 50), dtype=np.uint16)
    out = WholeImagePredictor(nn.Identity(), roi_size=(32, 32), progress=False)(image)
    torch.testing.assert_close(out, torch.tensor(image.astype(np.float32)), atol=0.02, rtol=1e-6)


def test_odd_sized_image_keeps_its_shape():
    net = nn.Conv2d(1, 3, 3, padding=1)
    out = WholeImagePredictor(net, roi_size=(64, 64), overlap=0.25, progress=False)(smooth_image((301, 457)))
    assert out.shape == (3, 301, 457)
    assert torch.isfinite(out).all()


def test_stride_padding_values():
    # Smaller than the roi: padded up to the roi, split evenly between both sides.
    assert stride_padding((20, 30), (64, 64), 32) == ((22, 22), (17, 17))
    # Larger than the roi: padded to the next multiple of 32 (128, 96).
    assert stride_padding((100, 70), (64, 64), 32) == ((14, 14), (13, 13))
    assert stride_padding((64, 96), (64, 64), 32) == ((0, 0), (0, 0))


def test_image_smaller_than_roi_is_padded_and_cropped_back():
    spy = ShapeSpy()
    image = smooth_image((20, 30))
    out = WholeImagePredictor(spy, roi_size=(64, 64), progress=False)(image)
    assert spy.shapes == [(64, 64)]  # the padded image is exactly one window
    torch.testing.assert_close(out, image, atol=1e-5, rtol=0)


def test_every_window_is_a_stride_multiple():
    spy = ShapeSpy()
    WholeImagePredictor(spy, roi_size=(64, 96), overlap=0.5, progress=False)(smooth_image((101, 77)))
    assert spy.shapes and all(shape == (64, 96) for shape in spy.shapes)


def test_flip_tta_with_equivariant_network_matches_no_tta():
    blur = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16  # symmetric in both axes
    net = fixed_conv([blur])
    image = smooth_image((40, 50))
    plain = WholeImagePredictor(net, roi_size=(64, 64), progress=False)(image)
    tta = FlipTTA(flips=((), (-1,), (-2,), (-2, -1)))
    flipped = WholeImagePredictor(net, roi_size=(64, 64), tta=tta, progress=False)(image)
    torch.testing.assert_close(flipped, plain, atol=1e-5, rtol=0)


def test_flow_flip_inverse_negates_the_flow_along_each_flipped_axis():
    output = torch.ones(1, 3, 4, 5)
    inverse = flow_flip_inverse()
    assert inverse(output, (-1,))[0, :, 0, 0].tolist() == [1.0, -1.0, 1.0]
    assert inverse(output, (-2,))[0, :, 0, 0].tolist() == [-1.0, 1.0, 1.0]
    assert inverse(output, (-2, -1))[0, :, 0, 0].tolist() == [-1.0, -1.0, 1.0]
    custom = flow_flip_inverse({-1: 0})  # e.g. outputs [flow_x, cellprob]
    assert custom(output, (-2, -1))[0, :, 0, 0].tolist() == [-1.0, 1.0, 1.0]
    with pytest.raises(ValueError):
        flow_flip_inverse({1: 0})


def test_tta_inverse_is_what_makes_flow_tta_correct():
    image = smooth_image((40, 50), seed=3)
    plain = WholeImagePredictor(flow_net(), roi_size=(64, 64), progress=False)(image)
    with_inverse = WholeImagePredictor(
        flow_net(), roi_size=(64, 64), progress=False, tta=FlipTTA(inverse=flow_flip_inverse())
    )(image)
    without_inverse = WholeImagePredictor(flow_net(), roi_size=(64, 64), progress=False, tta=FlipTTA())(image)
    torch.testing.assert_close(with_inverse, plain, atol=1e-5, rtol=0)
    # Without the inverse the flipped passes cancel the flows: each flow is averaged with its negation once.
    torch.testing.assert_close(without_inverse[:2], plain[:2] / 3, atol=1e-5, rtol=0)
    assert (without_inverse[:2] - plain[:2]).abs().max() > 0.1
    torch.testing.assert_close(without_inverse[2], plain[2], atol=1e-5, rtol=0)  # cellprob is unaffected


def test_ensemble_averages_network_outputs():
    predictor = WholeImagePredictor([Constant(1.0), Constant(4.0)], roi_size=(32, 32), progress=False)
    out = predictor(smooth_image((45, 33)))
    assert out.shape == (1, 45, 33)
    torch.testing.assert_close(out, torch.full_like(out, 2.5), atol=1e-5, rtol=0)


def test_inferer_runs_the_engine_network_and_module_lists_as_ensembles():
    """WholeImageInferer (what SupervisedEvaluator calls) gives WholeImagePredictor's output per batch item."""
    image = smooth_image((45, 33))
    batch = torch.stack([image, image.flip(-1)])
    inferer = WholeImageInferer(roi_size=(32, 32))
    ensemble = inferer(batch, nn.ModuleList([Constant(1.0), Constant(4.0)]))
    assert ensemble.shape == (2, 1, 45, 33)
    torch.testing.assert_close(ensemble, torch.full_like(ensemble, 2.5), atol=1e-5, rtol=0)
    conv = fixed_conv([np.arange(9, dtype=np.float32).reshape(3, 3)])
    expected = WholeImagePredictor(conv, roi_size=(32, 32), progress=False)(batch)
    torch.testing.assert_close(inferer(batch, conv), expected)


def test_output_activation_is_applied():
    image = smooth_image((30, 30)) * 4 - 2
    out = WholeImagePredictor(nn.Identity(), roi_size=(32, 32), output_activation=torch.sigmoid,
                              progress=False)(image)
    torch.testing.assert_close(out, torch.sigmoid(image), atol=1e-5, rtol=0)


def test_halo_tiles_partition_the_image():
    shape = (150, 200)
    tiles = halo_tiles(shape, tile_size=64, halo=16)
    covered = np.zeros(shape, dtype=int)
    for tile in tiles:
        covered[tile.core] += 1
        for core, context, size in zip(tile.core, tile.context, shape):
            assert core.stop - core.start <= 64
            assert context.start == max(0, core.start - 16) and context.stop == min(size, core.stop + 16)
    assert (covered == 1).all()
    assert len(tiles) == 3 * 4


def test_tiling_matches_whole_image_prediction():
    # Receptive field radius 3 < halo 16, and each padded tile fits one 96 x 96 window, so tiles join exactly.
    net = random_cnn()
    image = smooth_image((150, 200), seed=5)
    whole = WholeImagePredictor(net, roi_size=(160, 224), progress=False)(image)
    tiled_predictor = WholeImagePredictor(net, roi_size=(96, 96), tile_size=64, halo=16, progress=False)
    tiled = tiled_predictor(image)
    torch.testing.assert_close(tiled, whole, atol=1e-4, rtol=0)
    # The untiled run is the network on the mirror-padded image, cropped back.
    padded = np.pad(image.numpy(), ((0, 0), (5, 5), (12, 12)), mode="symmetric")
    with torch.no_grad():
        direct = net(torch.from_numpy(padded)[None])[0, :, 5:-5, 12:-12]
    torch.testing.assert_close(whole, direct, atol=1e-4, rtol=0)


def test_large_image_with_tiling_is_stitched_everywhere():
    # A pointwise net gives 2 * x + 1 exactly, so any misplaced tile core would show.
    net = Affine(2.0, 1.0)
    image = smooth_image((3000, 3000))
    predictor = WholeImagePredictor(net, roi_size=(1152, 1152), overlap=0.25, sw_batch_size=1, tile_size=1024,
                                    halo=64, progress=False)
    out = predictor(image)
    assert out.shape == (1, 3000, 3000)
    torch.testing.assert_close(out, 2 * image + 1, atol=1e-4, rtol=0)


def test_batched_input_matches_single_images():
    predictor = WholeImagePredictor(random_cnn(), roi_size=(32, 32), progress=False)
    batch = torch.cat([smooth_image((40, 36), seed=s)[None] for s in (1, 2)])
    out = predictor(batch)
    assert out.shape == (2, 2, 40, 36)
    torch.testing.assert_close(out[1], predictor(batch[1]), atol=1e-6, rtol=0)


def test_3d_identity_and_tiling():
    image = torch.rand(1, 20, 30, 40)
    identity = WholeImagePredictor(nn.Identity(), roi_size=(16, 32, 32), stride_multiple=16, progress=False)
    torch.testing.assert_close(identity(image), image, atol=1e-5, rtol=0)
    net = nn.Conv3d(1, 2, 1)
    tiled = WholeImagePredictor(net, roi_size=(32, 32, 32), stride_multiple=16, tile_size=16, halo=4,
                                tta=FlipTTA(flips=((), (-3,))), progress=False)(image)
    with torch.no_grad():
        expected = net(image[None])[0]
    torch.testing.assert_close(tiled, expected, atol=1e-5, rtol=0)


def test_networks_keep_their_training_mode():
    net = random_cnn()
    net.train()
    WholeImagePredictor(net, roi_size=(32, 32), progress=False)(smooth_image((20, 20)))
    assert net.training


def test_progress_bar_runs(capsys):
    predictor = WholeImagePredictor(nn.Identity(), roi_size=(32, 32), tta=FlipTTA(), progress=True)
    predictor(smooth_image((40, 40)))
    assert "predict" in capsys.readouterr().err


@pytest.mark.parametrize("shape", [(40, 40), (1, 1, 1, 40, 40), (1, 0, 40)])
def test_bad_image_shape_is_an_input_error(shape):
    predictor = WholeImagePredictor(nn.Identity(), roi_size=(32, 32), progress=False)
    with pytest.raises(InputError):
        predictor(torch.zeros(shape))


@pytest.mark.parametrize(
    "options",
    [{"roi_size": (48, 48)}, {"roi_size": (32,)}, {"tta": FlipTTA(flips=((1,),))}, {"halo": -1}, {"tile_size": 0}],
)
def test_bad_settings_are_rejected(options):
    with pytest.raises(ValueError):
        WholeImagePredictor(nn.Identity(), **{"roi_size": (32, 32), **options})


def test_network_with_wrong_output_shape_is_reported():
    predictor = WholeImagePredictor(nn.MaxPool2d(2), roi_size=(32, 32), progress=False)
    with pytest.raises(ValueError, match="network must return"):
        predictor(smooth_image((32, 32)))
