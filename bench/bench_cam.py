"""CAM, Grad-CAM and Grad-CAM++ time per image: at a 224x224 original and a 2000x2500 original (the
upsampling to the original size included), batched (`predict_many`) vs one by one (`predict`), and the
gallery's time to its first 24 thumbnails with heatmaps (prediction + overlay + thumbnail).

The network has random weights (timing only; no training, no download): ResNet-18 by default,
`--backbone resnet152` for the reference network.

    .venv/bin/python -m bench.bench_cam [--backbone resnet18] [--images 8] [--batch 8] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from core.device import choose_device
from core.models.xray_classifier.net import build_model, model_args
from core.models.xray_classifier.predict import make_predictor
from core.volume import Volume


def predictor(backbone: str, device: str):
    args = model_args({"backbone": backbone, "image_size": 224}, 2)
    model = build_model(**args)
    payload = {
        "model_args": args,
        "state_dict": model.state_dict(),
        "classes": ["NORMAL", "PNEUMONIA"],
        "preprocess": {"image_size": 224, "eval_crop_fraction": 0.875},
        "cam_method": "cam",
    }
    return make_predictor([payload], device, f"bench/{backbone}")


def volumes(n: int, shape: tuple[int, int]) -> list[Volume]:
    rng = np.random.default_rng(0)
    return [
        Volume(array=rng.uniform(0, 4095, (1, *shape)).astype(np.float32), modality="DX") for _ in range(n)
    ]


def per_image(fn, n: int, device: str) -> float:
    fn()  # warm-up (MONAI hooks, allocator)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / n


def gallery_first_24(pred, device: str) -> float:
    from core import class_review
    from core.models.xray_classifier.synthetic import finding_xray

    vols = [
        Volume(array=finding_xray(256, seed=i, pneumonia=i % 2 == 1).image[None] * 255, modality="OT")
        for i in range(24)
    ]
    start = time.perf_counter()
    for p, v in zip(pred.predict_many(vols, batch_size=8), vols, strict=True):
        class_review.thumbnail(class_review.overlay(v.array, p.heatmap, 0.5), 192)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18", choices=("resnet18", "resnet50", "resnet152"))
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = choose_device(args.device)
    pred = predictor(args.backbone, device)
    n = args.images
    print(
        f"{args.backbone} on {device}, torch threads {torch.get_num_threads()}, {n} images per timing, "
        f"network input 224 (resize 256, center crop 224)"
    )
    print(f"{'original':>11}  {'method':>10}  {'one by one ms':>13}  {'batched ms':>10}  {'ratio':>5}")
    for shape in ((224, 224), (2000, 2500)):
        vols = volumes(n, shape)
        for method in ("cam", "gradcam", "gradcam++"):
            single = per_image(lambda: [pred.predict(v, cam_method=method) for v in vols], n, device)  # noqa: B023
            batched = per_image(lambda: pred.predict_many(vols, args.batch, cam_method=method), n, device)  # noqa: B023
            print(
                f"{shape[0]:>5}x{shape[1]:<5}  {method:>10}  {single * 1e3:13.1f}  {batched * 1e3:10.1f}  "
                f"{batched / single:5.2f}"
            )
    seconds = gallery_first_24(pred, device)
    print(f"gallery: first 24 thumbnails with CAM heatmaps (256 px demo X-rays): {seconds:.2f} s")


if __name__ == "__main__":
    main()
