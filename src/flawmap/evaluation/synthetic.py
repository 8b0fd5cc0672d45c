"""Validation without real defects: held-out good images plus synthetically damaged copies.

Choosing a hyper-parameter or a checkpoint on the test set is not allowed; a user with only
defect-free images still needs *some* anomalies to validate on. :class:`SyntheticValidationSet`
pairs every held-out good image with a copy damaged by :class:`flawmap.synth.DefectSynthesizer`
(label 1, mask = the damaged pixels), so the usual metrics (:func:`validate`) apply.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

from flawmap.errors import DataError
from flawmap.metrics import compute_metrics
from flawmap.models.base import Detector
from flawmap.synth import DefectSynthesizer


class SyntheticValidationSet(Dataset):
    """Items ``0..n-1``: the good images as given (label 0, empty mask); items ``n..2n-1``: the
    same images with one synthetic defect each (label 1, mask (1, H, W)).

    Defects are made once, in ``__init__``, from ``seed`` (image ``i`` uses seed ``seed + i``),
    so the set is identical for every model and every call.
    """

    def __init__(self, good: Dataset, synthesizer: DefectSynthesizer, seed: int = 0) -> None:
        if len(good) == 0:  # type: ignore[arg-type]
            raise DataError("the validation set needs at least one good image")
        self.good = good
        self.defects = []
        for i in range(len(good)):  # type: ignore[arg-type]
            image = good[i]["image"]
            generator = torch.Generator().manual_seed(seed + i)
            self.defects.append(synthesizer(image, generator))

    def __len__(self) -> int:
        return 2 * len(self.defects)

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self.defects)
        if not 0 <= index < 2 * n:
            raise IndexError(index)
        if index < n:
            image = self.good[index]["image"]
            return {
                "image": image,
                "mask": torch.zeros((1, *image.shape[-2:]), dtype=torch.float32),
                "label": 0,
                "defect_type": "good",
            }
        defect = self.defects[index - n]
        return {"image": defect.image, "mask": defect.mask, "label": 1, "defect_type": defect.kind}


def validate(detector: Detector, validation: Dataset) -> dict[str, float | None]:
    """Image and pixel metrics (:func:`flawmap.metrics.compute_metrics`) of a fitted detector
    on a labelled set, e.g. a :class:`SyntheticValidationSet`."""
    pred = detector.predict(validation, keep=("label", "mask"))
    masks = pred.targets["mask"][:, 0] > 0.5
    return compute_metrics(pred.targets["label"], pred.scores, masks, pred.maps)
