"""CPU cost of CUPre's detector: forward time per image (eval, LIVECell-sized 520 x 704 images) and one training
step, for the paper-scale Cascade Mask R-CNN (ResNeSt-200 + FPN, the configs' defaults) and the quick model.

Prints one JSON object. Weights are random (Kaiming, as before COCO pretraining): the proposal count, and so
the head time, is the configured maximum either way.

    .venv/bin/python scripts/benchmark_cupre.py [--size 520,704] [--repeats 3] [--threads 1] [--train-size 128]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time

import torch

from cellzoo.methods.cupre import cascade_mask_rcnn

QUICK = dict(backbone="resnet18", backbone_kwargs={"channels": (16, 32, 64, 128), "stem_width": 16}, fpn_channels=32,
             gn_groups=8, representation=64, mask_layers=(16, 16), rpn_pre_nms_top_n_train=300,
             rpn_post_nms_top_n_train=150, rpn_pre_nms_top_n_test=400, rpn_post_nms_top_n_test=200,
             rpn_batch_size_per_image=64, box_batch_size_per_image=64, detections_per_img=200)


def forward_seconds(net: torch.nn.Module, size: tuple[int, int], repeats: int) -> tuple[float, int]:
    """Median eval forward time of one image and the number of detections it returned."""
    net.eval()
    image = torch.rand(3, *size, generator=torch.Generator().manual_seed(0))
    times, count = [], 0
    with torch.no_grad():
        net([image])  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            count = len(net([image])[0]["boxes"])
            times.append(time.perf_counter() - start)
    return statistics.median(times), count


def train_step_seconds(net: torch.nn.Module, side: int) -> float:
    """One SGD step on one image of side x side with two square cells."""
    net.train()
    image = torch.zeros(3, side, side)
    masks = torch.zeros(2, side, side, dtype=torch.uint8)
    for i, (y, x, s) in enumerate([(side // 8, side // 8, side // 4), (side // 2, side // 2, side // 3)]):
        image[:, y:y + s, x:x + s] = 1
        masks[i, y:y + s, x:x + s] = 1
    boxes = torch.tensor([[side // 8, side // 8, side // 8 + side // 4, side // 8 + side // 4],
                          [side // 2, side // 2, side // 2 + side // 3, side // 2 + side // 3]], dtype=torch.float32)
    target = {"boxes": boxes, "labels": torch.ones(2, dtype=torch.int64), "masks": masks}
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9)
    start = time.perf_counter()
    sum(net([image], [target]).values()).backward()
    optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="520,704", help="H,W of the inference image")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--train-size", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    size = tuple(int(v) for v in args.size.split(","))
    report = {"torch": torch.__version__, "cpu": platform.processor() or platform.machine(), "threads": args.threads,
              "image": list(size)}
    for name, kwargs in (("quick", QUICK), ("paper", {})):
        torch.manual_seed(0)
        net = cascade_mask_rcnn(num_classes=2, **kwargs)
        seconds, count = forward_seconds(net, size, args.repeats)
        report[name] = {"params_M": round(sum(p.numel() for p in net.parameters()) / 1e6, 1),
                        "forward_s_per_image": round(seconds, 2), "detections": count,
                        f"train_step_s_at_{args.train_size}px": round(train_step_seconds(net, args.train_size), 2)}
    report["peak_rss_GB"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
