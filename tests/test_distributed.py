"""Multi-GPU machinery on the CPU: shards, per-rank seeds and shares, the run settings, the AMP scaler kept
across AMT2 rounds, the fp32 differences of two losses, and, in 2 gloo processes, the collectives (rank 0's
stop decision, CUPre's AP gathered once per image, MoCo's queue filled by both processes). The bundles
under torchrun: tests/test_lifecycle.py (MEDIAR with one validation image) and tests/test_multi_gpu_bundles.py."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from cellzoo.engines import distributed, setup_run
from cellzoo.methods.cupre import PartSampler
from cellzoo.methods.cupre.amt2 import KeepGradScaler


@pytest.fixture
def as_rank(monkeypatch):
    """Pretend to be process `rank` of `world` as torchrun's environment says (no process group)."""
    def set_rank(rank: int, world: int) -> None:
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(world))
    return set_rank


# ---------------------------------------------------------------- shards, seeds, shares

@pytest.mark.parametrize("n, world", [(10, 2), (7, 3), (1, 2), (3, 8)])
def test_training_shards_are_equal_and_cover_every_item(as_rank, n, world):
    items = [f"img{i}" for i in range(n)]
    shards = []
    for rank in range(world):
        as_rank(rank, world)
        shards.append(distributed.shard(items, seed=5))
    assert {len(s) for s in shards} == {-(-n // world)}  # equal: every process the same number of steps
    assert set().union(*shards) == set(items)
    if n % world == 0:  # a partition: no item on two processes
        assert sorted(x for s in shards for x in s) == sorted(items)


@pytest.mark.parametrize("n, world", [(10, 3), (2, 2), (1, 2), (3, 4)])
def test_validation_shards_score_each_item_once_or_every_item_everywhere(as_rank, n, world):
    items = list(range(n))
    shards = []
    for rank in range(world):
        as_rank(rank, world)
        shards.append(distributed.validation_shard(items))
    if n >= world:
        assert sorted(x for s in shards for x in s) == items and all(shards)
    else:  # fewer images than processes: each validates all, a per-image mean of equal copies is the same mean
        assert all(s == items for s in shards)


def test_one_process_changes_nothing(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    items = list(range(5))
    assert distributed.shard(items, seed=1) == items and distributed.validation_shard(items) == items
    assert distributed.rank_seed(7) == 7 and distributed.per_rank(64) == 64 and distributed.agree(True)


def test_each_process_gets_its_own_seed_and_its_share_of_an_epoch(as_rank):
    as_rank(1, 4)
    assert distributed.rank_seed(0) != 0 and distributed.per_rank(64) == 16 and distributed.per_rank(None) is None
    as_rank(0, 4)
    assert distributed.rank_seed(3) == 3


def test_amt2_parts_of_the_shards_cover_the_coco_set_once_per_k_rounds(as_rank):
    """Each process splits its shard into K parts; round k trains every process on its part k, so over K
    rounds the processes together train on every COCO image exactly once."""
    items, world, rounds = list(range(24)), 2, 3
    seen_per_round = []
    for k in range(rounds):
        seen = []
        for rank in range(world):
            as_rank(rank, world)
            part = distributed.shard(items, seed=0)
            sampler = PartSampler(len(part), rounds, seed=0)
            sampler.set_part(k)
            seen += [part[i] for i in set(sampler)]
        seen_per_round.append(seen)
    assert all(len(round_items) == len(items) // rounds for round_items in seen_per_round)
    assert sorted(x for r in seen_per_round for x in r) == items


# ---------------------------------------------------------------- run settings

def test_setup_run_seeds_per_rank_and_sets_cudnn(as_rank):
    benchmark, deterministic = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    try:
        as_rank(0, 2)
        setup_run(3, deterministic=False)
        rank0 = torch.rand(3)
        assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
        as_rank(1, 2)
        setup_run(3, deterministic=True)
        assert not torch.equal(rank0, torch.rand(3))  # another process, another stream
        assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
        with pytest.raises(ValueError, match="cudnn_benchmark"):
            setup_run(3, deterministic=True, cudnn_benchmark=True)
        with pytest.raises(ValueError, match="float32_matmul_precision"):
            setup_run(3, float32_matmul_precision="fast")
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = benchmark, deterministic


def test_one_grad_scaler_for_every_round_and_through_resume():
    from ignite.engine import Engine

    keeper = KeepGradScaler()
    trainer = Engine(lambda engine, batch: None)
    keeper.attach(trainer)
    first = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    trainer.scaler = first
    trainer.run([0], max_epochs=1)
    first.scale(torch.tensor(1.0))  # a round of training used it...
    first.update(new_scale=64.0)  # ...and learnt its scale
    trainer.scaler = torch.amp.GradScaler("cpu")  # MONAI's Trainer.run() makes a new one every run
    trainer.run([0], max_epochs=1)
    assert trainer.scaler is first and trainer.scaler.get_scale() == 64.0
    resumed = KeepGradScaler()
    resumed.load_state_dict(keeper.state_dict())
    fresh = Engine(lambda engine, batch: None)
    resumed.attach(fresh)
    fresh.scaler = torch.amp.GradScaler("cpu")
    fresh.run([0], max_epochs=1)
    assert fresh.scaler.get_scale() == 64.0


def test_the_distance_and_mae_losses_subtract_in_fp32():
    """An fp16 prediction against an fp32 target: the difference of values fp16 cannot hold is kept."""
    from cellzoo.methods.isl.losses import DistanceMaskLoss
    from cellzoo.methods.unetr import MaskedReconstructionLoss

    target = torch.full((1, 1, 4, 4), 1000.3)
    pred = torch.full((1, 1, 4, 4), 1000.0).half()  # fp16 holds 1000.0 exactly, 1000.3 only as 1000.5
    isl = DistanceMaskLoss(alpha=0.0)(torch.cat([pred, pred], 1), torch.cat([target, torch.ones_like(target)], 1))
    assert isl.dtype == torch.float32 and isl.item() == pytest.approx(0.09, rel=1e-3)
    mask = torch.ones_like(pred)
    mae = MaskedReconstructionLoss(patch_size=4)(torch.cat([pred, mask], 1), target)
    assert mae.dtype == torch.float32 and mae.item() == pytest.approx(0.09, rel=1e-3)


def test_onnx_asks_for_cuda_only_where_both_onnxruntime_and_torch_have_it():
    from cellzoo.inference.onnx import onnx_providers

    both = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert onnx_providers(both, cuda=True) == both
    assert onnx_providers(both, cuda=False) == ["CPUExecutionProvider"]
    assert onnx_providers(["CPUExecutionProvider"], cuda=True) == ["CPUExecutionProvider"]


def test_cupre_detector_and_moco_get_plain_tensors():
    """MetaTensors stripped before torchvision's detector and MoCo (no metadata is needed there)."""
    from monai.data import MetaTensor

    from cellzoo.engines.contrastive import PrepareTwoViews
    from cellzoo.methods.cupre.training import PrepareDetectionBatch

    image = MetaTensor(torch.rand(1, 8, 8), meta={"filename_or_obj": "a.tif"})
    batch = {"image": [image], "boxes": [torch.zeros(0, 4)], "labels": [torch.zeros(0, dtype=torch.int64)],
             "masks": [torch.zeros(0, 8, 8, dtype=torch.uint8)]}
    images, targets, *_ = PrepareDetectionBatch()(batch)
    assert type(images[0]) is torch.Tensor and all(type(v) is torch.Tensor for v in targets[0].values())
    view_q, _, (view_k,), _ = PrepareTwoViews()({"image_q": MetaTensor(torch.rand(2, 1, 4, 4)),
                                                 "image_k": MetaTensor(torch.rand(2, 1, 4, 4))})
    assert type(view_q) is torch.Tensor and type(view_k) is torch.Tensor


# ---------------------------------------------------------------- two gloo processes

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _two_process_checks(rank: int, world: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    distributed.init_process_group("gloo", timeout_minutes=2)
    try:
        out = {"agree": distributed.agree(rank == 0)}  # rank 0's answer on both
        out["ap_gathered"] = _cupre_ap_with_shared_image(rank)
        out["queue"] = _moco_queue_after_one_step(rank)
        results[rank] = out
    finally:
        torch.distributed.destroy_process_group()


def _cupre_ap_with_shared_image(rank: int) -> tuple[float, int]:
    """Both processes validate the same image (fewer images than processes): it is scored once, and the AP
    is that of one process alone with it."""
    from cellzoo.methods.cupre.evaluation import DetectionAPMetric

    metric = DetectionAPMetric(iou_type="bbox")
    box = [2.0, 2.0, 12.0, 12.0]
    record = {"annotations": [{"bbox": [2.0, 2.0, 10.0, 10.0], "category_id": 1, "iscrowd": 0, "area": 100.0}],
              "height": 32, "width": 32, "name": "shared"}
    det = {"boxes": torch.tensor([box, [20.0, 20.0, 30.0, 30.0]]), "scores": torch.tensor([0.6, 0.9]),
           "labels": torch.tensor([1, 1])}
    metric.reset()
    metric.update(([det], [record]))
    return metric.compute(), metric.images_scored


def _moco_queue_after_one_step(rank: int) -> list:
    """One training forward of MoCo on each process with its own images: the queue holds both processes' keys."""
    from torch import nn

    from cellzoo.engines.contrastive import MoCo

    torch.manual_seed(0)  # the same initial weights on both processes, as DDP would broadcast them
    moco = MoCo(nn.Sequential(nn.Flatten(), nn.Linear(12, 8)), feature_dim=8, dim=4, hidden_dim=8, queue_size=8)
    generator = torch.Generator().manual_seed(100 + rank)  # each process its own images
    images = torch.randn(2, 3, 2, 2, generator=generator)
    moco.train()(images, images)
    return moco.queue[:, :4].T.tolist()  # 2 keys from each process, rank 0's first


def test_two_gloo_processes_agree_gather_once_and_share_the_moco_queue():
    from cellzoo.methods.cupre.evaluation import DetectionAPMetric

    results = mp.Manager().dict()
    mp.spawn(_two_process_checks, args=(2, _free_port(), results), nprocs=2, join=True)
    assert results[0]["agree"] is True and results[1]["agree"] is True
    single = DetectionAPMetric(iou_type="bbox")
    single.reset()
    box = {"boxes": torch.tensor([[2.0, 2.0, 12.0, 12.0], [20.0, 20.0, 30.0, 30.0]]),
           "scores": torch.tensor([0.6, 0.9]), "labels": torch.tensor([1, 1])}
    single.update(([box], [{"annotations": [{"bbox": [2.0, 2.0, 10.0, 10.0], "category_id": 1, "iscrowd": 0,
                                             "area": 100.0}], "height": 32, "width": 32, "name": "shared"}]))
    expected = single.compute()
    assert 0 < expected < 1
    for rank in (0, 1):
        assert results[rank]["ap_gathered"] == (pytest.approx(expected), 1)  # one image, not two copies
    queue0, queue1 = torch.tensor(results[0]["queue"]), torch.tensor(results[1]["queue"])
    assert torch.allclose(queue0, queue1)  # every process enqueues the same gathered keys
    keys_rank0, keys_rank1 = queue0[:2], queue0[2:]
    assert not torch.allclose(keys_rank0, keys_rank1, atol=1e-3)  # distinct keys from the two processes
