"""A toy model family kept outside core/models, registered through SLICEWISE_FAMILY_MODULES.

It proves that a family is one module: the jobs, the engine, inference, the prediction store
and the Viewer's layers handle it without a line of family-specific code. The task: find a
bright blob on small 2D slices (a mask), say on which side it lies (a label), and show where
the network looked (its blob probability as a heatmap).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.models import QUICK_PRESET, LazyRef, ModelSpec, family_defaults, register

FAMILY = "toy_blobs"
CLASSES = ("left", "right")
SIZE = 24


def is_dataset(folder: Path, names: set) -> bool:
    return "toy.json" in names


def blob_volume(seed: int, depth: int = 4, size: int = SIZE):
    """(volume (z, y, x) float32, mask uint8, side index): one bright disc per slice on one side."""
    import numpy as np

    rng = np.random.default_rng(seed)
    side = int(rng.integers(2))
    yy, xx = np.mgrid[:size, :size]
    image = rng.normal(0.0, 0.3, (depth, size, size)).astype(np.float32)
    mask = np.zeros((depth, size, size), np.uint8)
    for z in range(depth):
        cx = rng.uniform(3, size / 2 - 3) + side * size / 2
        cy = rng.uniform(4, size - 4)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= rng.uniform(2.0, 3.5) ** 2
        image[z][disc] += 2.0
        mask[z][disc] = 1
    return image, mask, side


def build(width: int = 8):
    from torch import nn

    return nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1),
                         nn.ReLU(), nn.Conv2d(width, 1, 1))


def make_training(settings: dict[str, Any], data: Path, run_dir: Path):
    import numpy as np
    import pytorch_lightning as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    class ToyModule(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.settings = dict(settings)
            self.model_args = {"width": int(settings["width"])}
            self.model = build(**self.model_args)

        def describe(self) -> dict[str, Any]:
            return {"classes": list(CLASSES), "world_size": int(self.trainer.world_size)}

        def _loss(self, batch):
            x, y = batch
            return torch.nn.functional.binary_cross_entropy_with_logits(self.model(x), y)

        def training_step(self, batch, _):
            loss = self._loss(batch)
            self.log("train_loss", loss, on_epoch=True, on_step=False, sync_dist=True)
            return loss

        def validation_step(self, batch, _):
            self.log("val_loss", self._loss(batch), on_epoch=True, on_step=False, sync_dist=True)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=float(settings["lr"]))

    def tensors(seeds):
        images, masks = zip(*(blob_volume(s)[:2] for s in seeds), strict=True)
        x = torch.from_numpy(np.concatenate(images))[:, None]
        return TensorDataset(x, torch.from_numpy(np.concatenate(masks)).float()[:, None])

    class ToyData(pl.LightningDataModule):
        def train_dataloader(self):
            return DataLoader(tensors(range(40)), batch_size=int(settings["batch_size"]), shuffle=True)

        def val_dataloader(self):
            return DataLoader(tensors(range(1000, 1008)), batch_size=int(settings["batch_size"]))

    return ToyModule(), ToyData()


class ToyPredictor:
    family = FAMILY

    def __init__(self, model, name: str) -> None:
        self.model, self.name = model, name

    def predict(self, volume):
        import numpy as np
        import torch

        from core.infer import Prediction

        with torch.no_grad():
            logits = self.model(torch.from_numpy(volume.array.astype(np.float32))[:, None])[:, 0]
        heat = torch.sigmoid(logits).numpy()
        mask = (heat > 0.5).astype(np.uint8)
        xs = np.nonzero(mask)[2]
        right = float(np.mean(xs >= volume.shape[2] / 2)) if xs.size else 0.5
        heat = heat / max(float(heat.max()), 1e-6)
        return Prediction(family=FAMILY, model=self.name, mask=mask, heatmap=heat,
                          label=CLASSES[int(right > 0.5)], probabilities={"left": 1 - right, "right": right})


def make_predictor(payloads: list[dict[str, Any]], device: str, name: str) -> ToyPredictor:
    model = build(**payloads[0]["model_args"])
    model.load_state_dict(payloads[0]["state_dict"])
    return ToyPredictor(model.eval(), name)


SPEC = register(
    ModelSpec(
        name=FAMILY,
        task="segmentation",
        title="Toy blobs (a test family)",
        defaults=family_defaults({"width": 8, "lr": 0.02, "max_epochs": 6, "batch_size": 16,
                                  "num_workers": 0}),
        make_training=LazyRef(f"{__name__}:make_training"),
        make_predictor=LazyRef(f"{__name__}:make_predictor"),
        outputs=("label", "probabilities", "heatmap", "mask"),
        review="mask",
        dataset_rule=is_dataset,
        presets={QUICK_PRESET: {"max_epochs": 6}},
    )
)
