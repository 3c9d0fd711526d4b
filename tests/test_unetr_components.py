"""Tests for the UNETR LightMyCells building blocks: the 2D UNETR and its skips, the grid-masked MAE and the
transfer of its encoder, the challenge metrics against an independent computation, the data chains
(random focal plane, z-score round trip, mirror padding, GridMask, aligned augmentation), datalists and
the OME-TIFF outputs with physical pixel sizes, and the paper-scale network."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter

import numpy as np
import pytest
import tifffile
import torch

from cellzoo.bundles import bundle_path, config_files
from cellzoo.engines import transfer_weights
from cellzoo.errors import InputError, user_error_message
from cellzoo.io import write_ome_tiff
from cellzoo.io.physical import read_physical_size_um
from cellzoo.methods.unetr import (
    UNETR2D,
    ChallengeScores,
    Denormalized,
    GridMaskedAutoencoder,
    MaskedReconstructionLoss,
    MaskedReconstructionMetric,
    RandGridMaskd,
    RandomPlaned,
    SaveOrganelled,
    ZScored,
    augmentation_chain,
    challenge_metrics,
    checkerboard_mask,
    default_skip_blocks,
    grid_mask,
    inference_items,
    lightmycells_items,
    mae_to_unetr_keys,
    plane_items,
    summarise_scores,
    unetr_train_transforms,
    unetr_valid_transforms,
)
from cellzoo.synthetic import synthesize

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: small tensors run faster on one thread
TINY = dict(hidden_size=48, mlp_dim=96, num_layers=4, num_heads=4)
BUNDLE = "unetr_lightmycells"


def tiny_unetr(patch_size: int = 16, img_size: int = 64, **kwargs) -> UNETR2D:
    return UNETR2D(img_size=img_size, patch_size=patch_size, **{"feature_size": 4, "kernel_size": 3, **TINY, **kwargs})


# ---------------------------------------------------------------- network

@pytest.mark.parametrize("patch_size, levels", [(16, 4), (32, 5)])
def test_unetr_keeps_the_image_size_with_one_decoder_level_per_halving(patch_size, levels):
    torch.manual_seed(0)
    net = tiny_unetr(patch_size, img_size=128).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 1, 128, 128)).shape == (2, 1, 128, 128)
    assert len(net.decoders) == levels and len(net.encoders) == levels
    # level l has feature_size * 2**l channels; the bottleneck decoder takes the ViT's width
    assert [d.transp_conv.conv.out_channels for d in net.decoders] == [4 * 2**level for level in range(levels)]
    assert net.decoders[-1].transp_conv.conv.in_channels == 48


def test_default_skips_are_the_papers_blocks():
    assert default_skip_blocks(12, 5) == (3, 6, 9, 12)  # ViT-B, patch 32 (the paper)
    assert default_skip_blocks(12, 4) == (4, 8, 12)
    assert default_skip_blocks(4, 4) == (1, 3, 4)
    with pytest.raises(ValueError, match="cannot feed"):
        default_skip_blocks(2, 5)


def test_skips_are_the_hidden_states_after_the_named_blocks():
    """Encoder l receives the output of block skip_blocks[l-1] (1-based), laid out as the token grid."""
    torch.manual_seed(0)
    net = tiny_unetr(32, img_size=64, num_layers=8, skip_blocks=(2, 4, 6, 8)).eval()
    block_out, skip_in = {}, {}
    for i, block in enumerate(net.vit.blocks):
        block.register_forward_hook(lambda m, a, out, i=i: block_out.__setitem__(i + 1, out))
    for level, encoder in enumerate(net.encoders[1:], start=1):
        encoder.register_forward_hook(lambda m, args, out, level=level: skip_in.__setitem__(level, args[0]))
    with torch.no_grad():
        net(torch.randn(1, 1, 64, 64))
    for level, block in zip((1, 2, 3, 4), (2, 4, 6, 8)):
        expected = block_out[block].transpose(1, 2).reshape(1, 48, 2, 2)
        assert torch.equal(skip_in[level], expected)


def test_token_map_is_the_patch_embedding_grid():
    """tokens_to_map undoes the ViT's flattening of its convolutional patch embedding (row-major tokens)."""
    net = tiny_unetr(16, img_size=64)
    grid = net.vit.patch_embedding.patch_embeddings(torch.randn(2, 1, 64, 64))
    assert torch.equal(net.tokens_to_map(grid.flatten(2).transpose(1, 2)), grid)


def test_unetr_refuses_bad_sizes():
    with pytest.raises(ValueError, match="power of two"):
        tiny_unetr(24, img_size=96)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        tiny_unetr(32, img_size=80)
    with pytest.raises(ValueError, match="odd"):
        tiny_unetr(16, kernel_size=4)
    with pytest.raises(ValueError, match="built for"):
        tiny_unetr(16, img_size=64)(torch.zeros(1, 1, 128, 128))


def test_every_trainable_parameter_gets_a_gradient_as_ddp_requires():
    """DDP (multi_gpu_train.yaml) waits at the second step for a gradient of every trainable parameter: the
    cross-attention parts MONAI builds without cross-attention must be frozen, in the UNETR and the MAE,
    including the whole `cross_attn` block MONAI 1.4-1.5 builds (simulated here on MONAI's block)."""
    from monai.networks.blocks import TransformerBlock
    from monai.networks.blocks.crossattention import CrossAttentionBlock

    from cellzoo.methods.unetr.network import freeze_unused_cross_attention

    for network, out_index in ((tiny_unetr(), None), (tiny_mae(), 0)):
        out = network(torch.randn(1, 1, 64, 64))
        (out if out_index is None else out[:, out_index]).sum().backward()
        missing = [n for n, p in network.named_parameters() if p.requires_grad and p.grad is None]
        assert missing == []
    block = TransformerBlock(hidden_size=16, mlp_dim=32, num_heads=2)
    block.cross_attn = CrossAttentionBlock(hidden_size=16, num_heads=2)
    freeze_unused_cross_attention(block)
    assert not any(p.requires_grad for p in block.cross_attn.parameters())
    assert not any(p.requires_grad for p in block.norm_cross_attn.parameters())
    assert all(p.requires_grad for p in block.attn.parameters())


# ---------------------------------------------------------------- MAE

def tiny_mae(masking: str = "grid", **kwargs) -> GridMaskedAutoencoder:
    return GridMaskedAutoencoder(img_size=64, patch_size=16, masking=masking, decoder_hidden_size=32,
                                 decoder_mlp_dim=64, decoder_num_layers=1, decoder_num_heads=4, **{**TINY, **kwargs})


def test_checkerboard_hides_tokens_whose_row_plus_column_is_even():
    mask = checkerboard_mask((3, 4)).reshape(3, 4)
    assert mask.tolist() == [[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0]]
    assert int(checkerboard_mask((32, 32)).sum()) == 512  # 50% of the paper's 1024 tokens


def test_grid_mae_hides_the_same_checkerboard_in_every_image():
    torch.manual_seed(0)
    out = tiny_mae()(torch.randn(3, 1, 64, 64))
    assert out.shape == (3, 2, 64, 64)
    expected = checkerboard_mask((4, 4)).reshape(4, 4).float().repeat_interleave(16, 0).repeat_interleave(16, 1)
    for image_mask in out[:, 1]:
        assert torch.equal(image_mask, expected)


def test_random_masking_hides_the_ratio_at_random_places():
    torch.manual_seed(0)
    out = tiny_mae("random", masking_ratio=0.75)(torch.randn(4, 1, 64, 64))
    masks = out[:, 1, ::16, ::16].reshape(4, 16)
    assert masks.sum(1).tolist() == [12.0] * 4
    assert len({tuple(m.tolist()) for m in masks}) > 1
    with pytest.raises(ValueError, match="masking"):
        tiny_mae("blocks")


def test_mae_unpatchify_inverts_row_major_patchify():
    mae = tiny_mae()
    image = torch.randn(2, 1, 64, 64)
    tokens = image.reshape(2, 1, 4, 16, 4, 16).permute(0, 2, 4, 3, 5, 1).reshape(2, 16, 256)
    assert torch.equal(mae.unpatchify(tokens), image)


def test_mae_loss_is_the_mse_on_hidden_pixels_only():
    image = torch.zeros(1, 1, 4, 4)
    reconstruction = torch.zeros(1, 1, 4, 4)
    reconstruction[0, 0, 0, 0], reconstruction[0, 0, 3, 3] = 2.0, 10.0  # (3, 3) is visible: ignored
    mask = torch.zeros(1, 1, 4, 4)
    mask[0, 0, :2, :2] = 1  # four hidden pixels
    output = torch.cat([reconstruction, mask], dim=1)
    assert MaskedReconstructionLoss(patch_size=2)(output, image).item() == pytest.approx(4.0 / 4)
    metric = MaskedReconstructionMetric()
    metric(output, image)
    assert metric.aggregate().item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="mask channel"):
        MaskedReconstructionLoss(2)(reconstruction, image)


def test_mae_encoder_transfers_into_the_unetr_without_missing_or_unexpected_encoder_keys(tmp_path):
    """At the paper's ViT-B/32 sizes (768 / 12 layers / 12 heads / MLP 3072; 256-px images to keep it light)."""
    sizes = dict(img_size=256, patch_size=32, hidden_size=768, mlp_dim=3072, num_layers=12, num_heads=12)
    torch.manual_seed(0)
    mae = GridMaskedAutoencoder(decoder_hidden_size=64, decoder_mlp_dim=128, decoder_num_layers=1,
                                decoder_num_heads=4, **sizes)
    torch.save({"model": mae.state_dict()}, tmp_path / "mae.pt")
    unetr = UNETR2D(feature_size=4, kernel_size=3, **sizes)
    vit_keys = [k for k in unetr.state_dict() if k.startswith("vit.")]
    match = transfer_weights(unetr, tmp_path / "mae.pt", rename=mae_to_unetr_keys)
    assert match.unexpected == [] and match.mismatched == []
    assert [k for k in match.missing if k.startswith("vit.")] == []
    assert sorted(vit_keys) == sorted(k for k in match.loaded if k.startswith("vit.")) and len(vit_keys) == 161
    mae_state = mae.state_dict()
    assert torch.equal(unetr.vit.norm.weight, mae_state["blocks.12.weight"])  # the MAE's final LayerNorm
    assert torch.equal(unetr.vit.blocks[11].attn.qkv.weight, mae_state["blocks.11.attn.qkv.weight"])
    # a UNETR checkpoint goes through the same rename unchanged
    assert mae_to_unetr_keys(unetr.state_dict()).keys() == unetr.state_dict().keys()


# ---------------------------------------------------------------- challenge metrics

def _reference_normalise(x: np.ndarray) -> np.ndarray:
    low, high = np.percentile(x, 2), np.percentile(x, 99.8)
    return x if low == high else (x - low) / (high - low)


def _reference_metrics(pred: np.ndarray, gt: np.ndarray) -> dict:
    """The challenge's evaluation, written independently with sklearn, scipy and skimage."""
    from scipy.stats import pearsonr
    from skimage.metrics import structural_similarity
    from sklearn.metrics import mean_absolute_error
    from sklearn.metrics.pairwise import cosine_distances, euclidean_distances

    gt, pred = _reference_normalise(gt.astype(np.float64)), _reference_normalise(pred.astype(np.float64))
    pcc = pearsonr(gt.ravel(), pred.ravel())[0]
    data_range = max(pred.max() - pred.min(), gt.max() - gt.min())
    mse = np.mean((gt - pred) ** 2)
    return {"mae": mean_absolute_error(gt, pred), "ssim": structural_similarity(gt, pred, data_range=data_range),
            "pcc": 0.0 if np.isnan(pcc) else pcc,
            "euclidean": euclidean_distances(gt.reshape(1, -1), pred.reshape(1, -1))[0, 0],
            "cosine": abs(cosine_distances(gt.reshape(1, -1), pred.reshape(1, -1))[0, 0]),
            "psnr": 10 * np.log10((gt.max() - gt.min()) ** 2 / mse)}


@pytest.fixture(scope="module")
def image_pair() -> tuple[np.ndarray, np.ndarray]:
    """A blob image (uint16, as targets are stored) and a blurred, noisy, rescaled float prediction of it."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(3)
    gt = gaussian_filter((rng.random((96, 80)) > 0.97).astype(float), 3) * 4e5 + rng.normal(200, 20, (96, 80))
    pred = 0.01 * gaussian_filter(gt, 2) + rng.normal(0, 2, gt.shape) + 7.0
    return np.clip(gt, 0, 65535).astype(np.uint16), pred.astype(np.float32)


def test_challenge_metrics_match_an_independent_computation(image_pair):
    gt, pred = image_pair
    reference = _reference_metrics(pred, gt)
    nucleus = challenge_metrics(pred, gt, "Nucleus")
    assert set(nucleus) == {"mae", "ssim", "pcc", "euclidean", "cosine", "psnr"}
    for name, value in nucleus.items():
        assert value == pytest.approx(reference[name], rel=1e-5, abs=1e-7), name
    assert 0.3 < nucleus["pcc"] < 0.99  # a non-trivial pair: neither unrelated nor identical
    tubulin = challenge_metrics(pred, gt, "Tubulin")  # tubulin and actin: SSIM and PCC (+ PSNR)
    assert set(tubulin) == {"ssim", "pcc", "psnr"} and tubulin["ssim"] == pytest.approx(reference["ssim"], rel=1e-5)


def test_challenge_ssim_uses_the_larger_range_of_the_two_images(image_pair):
    """Differs from SSIM with the target's range when the prediction's normalised range is the larger."""
    from skimage.metrics import structural_similarity

    gt, pred = image_pair
    pred = pred.copy()
    pred[:3, :3] = pred.max() * 20  # a few hot pixels above the 99.8th percentile widen its normalised range
    gt_n, pred_n = _reference_normalise(gt.astype(float)), _reference_normalise(pred.astype(float))
    assert np.ptp(pred_n) > 5 * np.ptp(gt_n)
    with_gt_range = structural_similarity(gt_n, pred_n, data_range=np.ptp(gt_n))
    with_both = structural_similarity(gt_n, pred_n, data_range=np.ptp(pred_n))
    assert challenge_metrics(pred, gt, "Nucleus")["ssim"] == pytest.approx(with_both, rel=1e-6)
    assert abs(with_both - with_gt_range) > 1e-3


def test_a_constant_prediction_scores_pcc_zero(image_pair):
    gt, _ = image_pair
    scores = challenge_metrics(np.full(gt.shape, 5.0), gt, "Actin")
    assert scores["pcc"] == 0.0
    with pytest.raises(ValueError, match="organelle"):
        challenge_metrics(gt, gt, "Golgi")


def test_scores_are_averaged_per_modality_and_focal_offset():
    def record(item, modality, offset, psnr, pcc):
        return {"name": f"{item}_{offset}", "item": item, "modality": modality, "focal_offset": offset,
                "scores": {"ssim": 0.5, "pcc": pcc, "psnr": psnr}}

    records = [record("a", "BF", 0, 20.0, 0.8), record("a", "BF", 1, 16.0, 0.6), record("b", "PC", 1, 30.0, 0.9)]
    summary = summarise_scores(records, "Actin")
    assert summary["psnr"] == pytest.approx(22.0) and summary["n_images"] == 3 and summary["n_items"] == 2
    assert summary["by_modality"]["BF"]["psnr"] == pytest.approx(18.0)
    assert summary["by_modality"]["PC"]["pcc"] == pytest.approx(0.9)
    assert summary["by_focal_offset"]["1"]["psnr"] == pytest.approx(23.0)
    assert summary["by_focal_offset"]["0"]["n_images"] == 1
    handler = ChallengeScores("Actin")
    handler.records = records
    assert handler.summary() == summary


# ---------------------------------------------------------------- data chains

def test_zscore_keeps_the_inputs_stats_and_denormalisation_inverts_it():
    x = torch.from_numpy(np.random.default_rng(0).normal(300, 40, (1, 32, 32)).astype(np.float32))
    d = ZScored("image", keep_stats=True)({"image": x})
    assert d["image"].mean().item() == pytest.approx(0, abs=1e-5) and d["image"].std(unbiased=False).item() == pytest.approx(1, abs=1e-5)
    assert d["image_stats"].tolist() == pytest.approx([x.mean().item(), x.std(unbiased=False).item()], rel=1e-5)
    restored = Denormalized("pred")({"pred": d["image"], "image_stats": d["image_stats"]})["pred"]
    assert torch.allclose(restored, x, rtol=1e-5)
    flat = ZScored("image")({"image": torch.full((1, 4, 4), 7.0)})["image"]
    assert torch.equal(flat, torch.zeros(1, 4, 4))  # no division by a zero standard deviation


def test_random_plane_is_drawn_anew_at_every_call():
    planes = ["z0.tif", "z1.tif", "z2.tif"]
    pick = RandomPlaned("image").set_random_state(seed=0)
    counts = Counter(pick({"image": planes})["image"] for _ in range(300))
    assert set(counts) == set(planes) and min(counts.values()) > 70
    assert pick({"image": "only.tif"})["image"] == "only.tif"


def test_grid_mask_erases_a_square_per_unit():
    mask = grid_mask((100, 100), unit=10, ratio=0.5, offset=(0, 0))
    assert mask.mean() == pytest.approx(0.25)
    assert mask[:5, :5].all() and not mask[5:10, :].any() and not mask[:, 5:10].any()
    rotated = grid_mask((200, 200), unit=20, ratio=0.5, offset=(3, 7), angle=np.radians(30))
    assert rotated.mean() == pytest.approx(0.25, abs=0.02)


def test_gridmask_transform_erases_the_input_only():
    image = torch.ones(1, 64, 64)
    gm = RandGridMaskd("image", prob=1.0, ratio=0.5).set_random_state(seed=1)
    out = gm({"image": image, "label": image.clone()})
    erased = out["image"] == 0
    assert 0.1 < erased.float().mean().item() < 0.4 and torch.equal(out["label"], image)


def test_heavy_augmentation_moves_input_and_target_together():
    x = torch.from_numpy(np.random.default_rng(1).random((1, 64, 64)).astype(np.float32))
    spatial = [t for t in augmentation_chain(["image", "label"], "image", "heavy", 64) if "label" in t.keys]
    assert len(spatial) == 4  # rotation, two flips, elastic
    moved = 0
    for seed in range(6):
        d = {"image": x.clone(), "label": x.clone()}
        for t in spatial:
            t.set_random_state(seed=seed)
            d = t(d)
        assert torch.equal(torch.as_tensor(d["image"]), torch.as_tensor(d["label"]))
        moved += not torch.equal(torch.as_tensor(d["image"]), x)
    assert moved >= 3  # the transforms did act


def test_small_images_are_mirror_padded(tmp_path):
    ramp = np.tile(np.arange(96, dtype=np.float32), (96, 1))  # value = column index
    path = write_ome_tiff(tmp_path / "ramp.ome.tiff", ramp, "YX")
    out = unetr_valid_transforms(with_target=False, crop_size=128)({"image": str(path)})["image"]
    assert out.shape == (1, 128, 128)
    row = out[0, 0]  # z-scored ramp, padded by 16 px per side, mirrored at the border ("symmetric")
    assert torch.allclose(row[16:20].flip(0), row[12:16]) and torch.allclose(row[-20:-16].flip(0), row[-16:-12])


# ---------------------------------------------------------------- datalists and outputs

@pytest.fixture(scope="module")
def lightmycells(tmp_path_factory):
    return synthesize("lightmycells", 5, tmp_path_factory.mktemp("lmc") / "data", seed=2, size=(64, 64))


def test_items_lacking_the_organelle_are_skipped(lightmycells):
    for organelle in ("Nucleus", "Mitochondria", "Tubulin", "Actin"):
        on_disk = sorted(lightmycells.glob(f"Study_*/image_*_{organelle}.ome.tiff"))
        items = lightmycells_items(lightmycells, organelle)
        assert sorted(i["label"] for i in items) == [str(p) for p in on_disk]
    assert len(lightmycells_items(lightmycells)) == 5  # the MAE takes every image
    with pytest.raises(InputError, match="unknown organelle"):
        lightmycells_items(lightmycells, "Golgi")


def test_plane_items_give_every_plane_its_focal_offset(lightmycells, tmp_path):
    items = lightmycells_items(lightmycells, "Nucleus")
    planes = plane_items(items[:1])
    assert [(p["z"], p["focal_offset"]) for p in planes] == [(0, 1), (1, 0), (2, 1)]
    assert {p["label"] for p in planes} == {items[0]["label"]} and planes[0]["item"] == items[0]["name"]
    table = tmp_path / "best.csv"
    with open(table, "w", newline="") as handle:
        csv.writer(handle).writerows([["name", "best_z"], [items[0]["name"], 2]])
    assert [p["focal_offset"] for p in plane_items(items[:1], str(table))] == [2, 1, 0]
    with pytest.raises(InputError, match="no row"):
        plane_items(items[:2], str(table))


def test_inference_reads_every_plane_of_a_layout_or_every_file_of_a_folder(lightmycells, tmp_path):
    items = inference_items(lightmycells)
    assert len(items) == 15 and all("_z" in p["path"] for p in items)  # 5 images x 3 planes, no targets
    assert {p["folder"] for p in items} == {"Study_1", "Study_2"}
    write_ome_tiff(tmp_path / "a.ome.tiff", np.zeros((8, 8), np.uint16), "YX")
    assert [p["folder"] for p in inference_items(tmp_path)] == [""]


def test_predictions_keep_the_inputs_physical_pixel_size(tmp_path):
    source = write_ome_tiff(tmp_path / "in" / "image_1_BF_z0.ome.tiff", np.zeros((16, 12), np.uint16), "YX",
                            physical_size_um=(0.65, 0.325))
    assert read_physical_size_um(source) == pytest.approx((0.65, 0.325))
    pred = torch.rand(1, 16, 12, dtype=torch.float64)
    SaveOrganelled("pred", tmp_path / "out", "Nucleus")({"pred": pred, "path": str(source), "folder": "Study_1"})
    written = tmp_path / "out" / "Study_1" / "image_1_BF_z0_Nucleus.ome.tiff"
    assert read_physical_size_um(written) == pytest.approx((0.65, 0.325))
    with tifffile.TiffFile(written) as tif:
        assert tif.is_ome and tif.asarray().dtype == np.float32
        assert np.allclose(tif.asarray(), pred[0].numpy())
    bare = write_ome_tiff(tmp_path / "bare.ome.tiff", np.zeros((4, 4), np.uint16), "YX")
    assert read_physical_size_um(bare) is None


def test_training_chain_yields_aligned_roi_crops(lightmycells):
    item = lightmycells_items(lightmycells, "Nucleus")[0]
    chain = unetr_train_transforms(roi_size=96, augmentation="none").set_random_state(seed=0)
    sample = chain(item)
    assert set(sample) == {"image", "label"}  # the entry's other fields would not collate
    assert sample["image"].shape == sample["label"].shape == (1, 96, 96)
    assert sample["label"].mean().item() == pytest.approx(0, abs=0.05)  # the target is z-scored too


# ---------------------------------------------------------------- the paper-scale config

def paper_network(**overrides) -> torch.nn.Module:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(config_files(BUNDLE, "train"))
    parser.update(overrides)
    return parser.get_parsed_content("network_def")


def test_paper_scale_config_builds_vit_b32_with_the_papers_decoder():
    """The paper's network at its 1024 x 1024 window, built and run on PyTorch's meta device: every shape
    through the ViT (1024 tokens) and the 5-level decoder is computed, no arithmetic (CPU time)."""
    with torch.device("meta"):
        net = paper_network()
        out = net(torch.zeros(2, 1, 1024, 1024))
    assert out.shape == (2, 1, 1024, 1024) and out.dtype == torch.float32
    assert net.img_size == (1024, 1024) and net.patch_size == 32 and net.skip_blocks == (3, 6, 9, 12)
    assert len(net.vit.blocks) == 12 and net.vit.norm.normalized_shape == (768,)
    assert net.vit.patch_embedding.position_embeddings.shape == (1, 1024, 768)  # 32 x 32 tokens
    assert net.vit.blocks[0].mlp.linear1.out_features == 3072 and net.vit.blocks[0].attn.num_heads == 12
    assert net.encoders[0].layer.conv1.conv.kernel_size == (9, 9) and net.encoders[0].layer.conv1.conv.out_channels == 32
    assert sum(p.numel() for p in net.parameters()) == 195_841_633  # the model card's 195.8 M
    assert sum(p.numel() for p in net.vit.parameters()) == 86_620_416  # ViT-B/32 with 1024 position embeddings
    with torch.device("meta"):
        tubulin = paper_network(organelle="Tubulin")
    assert tubulin.encoders[0].layer.conv1.conv.kernel_size == (7, 7)
    assert tubulin.encoders[0].layer.conv1.conv.out_channels == 16


@pytest.mark.slow
def test_paper_scale_network_takes_a_training_step_on_the_cpu():
    """ViT-B/32 with the paper's decoder (32 filters, kernel 9), at 64 px (2 x 2 tokens) instead of 1024 (CPU
    time): every trainable tensor gets a finite gradient and one step moves the first ViT block."""
    torch.manual_seed(0)
    net = paper_network(roi_size=64)
    x, y = torch.randn(1, 1, 64, 64), torch.randn(1, 1, 64, 64)
    before = net.vit.blocks[0].attn.qkv.weight.detach().clone()
    loss = torch.nn.functional.mse_loss(net(x), y)
    loss.backward()
    trainable = {name: p for name, p in net.named_parameters() if p.requires_grad}
    assert len(trainable) == 243 and all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable.values())
    assert net.vit.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    torch.optim.SGD(net.parameters(), lr=1e-2).step()  # SGD: AdamW's state for 196 M tensors costs seconds
    assert torch.isfinite(loss) and not torch.equal(before, net.vit.blocks[0].attn.qkv.weight)


@pytest.mark.slow
def test_paper_scale_network_passes_verify_net_in_out(caplog):
    """MONAI's verify_net_in_out as the model zoo runs it (default n) on inference.yaml's paper network
    (ViT-B/32, decoder 32 filters kernel 9): metadata.json declares the one window size the ViT takes,
    1024 x 1024."""
    import logging

    from monai.bundle import verify_net_in_out

    folder = bundle_path(BUNDLE) / "configs"
    with caplog.at_level(logging.INFO):
        verify_net_in_out(net_id="network_def", meta_file=str(folder / "metadata.json"),
                          config_file=str(folder / "inference.yaml"), device="cpu")
    assert "data shape of network is verified with no error" in caplog.text
    assert json.loads((folder / "metadata.json").read_text())["network_data_format"]["inputs"]["image"]["num_channels"] == 1


def test_an_rgb_file_is_refused_naming_it(tmp_path):
    from cellzoo.methods.unetr import unetr_predict_transforms

    grey, rgb = tmp_path / "grey.tif", tmp_path / "rgb.tif"
    tifffile.imwrite(grey, np.arange(64 * 64, dtype=np.uint16).reshape(64, 64))
    tifffile.imwrite(rgb, np.zeros((64, 64, 3), np.uint8), photometric="rgb")
    assert unetr_predict_transforms()({"image": str(grey)})["image"].shape == (1, 64, 64)
    with pytest.raises(RuntimeError) as raised:  # MONAI's Compose wraps what a transform raises
        unetr_predict_transforms()({"image": str(rgb)})
    assert re.search("rgb.tif: expected 1 channel", user_error_message(raised.value))
