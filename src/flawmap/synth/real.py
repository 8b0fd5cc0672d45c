"""Real defects: a folder of defective images with masks used as the "synthetic" anomalies.

The semi-supervised setting of FCDD (Liznerski et al., ICLR 2021, §4): instead of generated
defects, a training image is replaced by one of a few real defective images with their masks.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from flawmap.data import FolderDataset, ImageTransform
from flawmap.errors import DataError
from flawmap.synth.defects import DefectGenerator, SyntheticDefect, _randint
from flawmap.synth.perlin import _check_generator

__all__ = ["RealDefects", "load_anomaly_folder"]


def load_anomaly_folder(
    folder: str | os.PathLike[str], transform: ImageTransform
) -> tuple[torch.Tensor, torch.Tensor]:
    """Real defective images with masks for the semi-supervised setting.

    Layout (MVTec-like, the defect folders of a test split without ``good``)::

        FOLDER/<defect>/<name>.png                      defective images (any image type)
        FOLDER/ground_truth/<defect>/<name>_mask.png    their masks (or <name>.png)

    Returns images (N, 3, H, W) in [0, 1] and masks (N, 1, H, W) in {0, 1} at ``transform``'s
    size. The folder is read as given: building it (e.g. one image per defect type taken out of
    a test split, and left out of evaluation) is the user's job; flawmap never takes images
    from a test split itself.

    Raises:
        DataError: the folder or its ``ground_truth`` subfolder is missing, it has no defect
            images, an image has no mask, or a mask is empty.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise DataError(f"anomaly folder {root} {what}")
    gt = root / "ground_truth"
    layout = "expected <dir>/<defect>/<name>.png and <dir>/ground_truth/<defect>/<name>_mask.png"
    if not gt.is_dir():
        raise DataError(f"anomaly folder {root} has no ground_truth/ folder with masks ({layout})")
    defect_dirs = sorted(
        d
        for d in root.iterdir()
        if d.is_dir() and d.name != "ground_truth" and not d.name.startswith(".")
    )
    if not defect_dirs:
        raise DataError(f"anomaly folder {root} has no defect subfolders ({layout})")
    dataset = FolderDataset(None, defect_dirs, mask_dir=gt, transform=transform)
    items = [dataset[i] for i in range(len(dataset))]
    for item in items:
        if not bool(item["mask"].any()):
            raise DataError(f"the mask of anomalous image {item['path']} is empty")
    images = torch.stack([item["image"] for item in items])
    masks = torch.stack([item["mask"] for item in items])
    return images, masks


class RealDefects(DefectGenerator):
    """Replaces an image by one of N real defective images (uniform draw), mask included.

    Args:
        images: (N, 3, H, W) defective images in [0, 1], at the training images' size.
        masks: (N, 1, H, W) their masks in {0, 1}.

    Raises:
        DataError: no images, or images and masks that do not match.
    """

    kind = "real"

    def __init__(self, images: torch.Tensor, masks: torch.Tensor) -> None:
        if images.ndim != 4 or images.shape[1] != 3 or len(images) < 1:
            raise DataError(f"images must have shape (N >= 1, 3, H, W), got {tuple(images.shape)}")
        if masks.shape != (len(images), 1, *images.shape[-2:]):
            raise DataError(
                f"masks must have shape (N, 1, H, W) = {(len(images), 1, *images.shape[-2:])}, "
                f"got {tuple(masks.shape)}"
            )
        self.images = images
        self.masks = masks

    @classmethod
    def from_folder(cls, folder: str | os.PathLike[str], transform: ImageTransform) -> RealDefects:
        """The defective images of ``folder`` (layout: :func:`load_anomaly_folder`)."""
        return cls(*load_anomaly_folder(folder, transform))

    def __repr__(self) -> str:
        return f"RealDefects(n={len(self.images)}, shape={tuple(self.images.shape[-2:])})"

    def __len__(self) -> int:
        return len(self.images)

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> SyntheticDefect:
        """A random real defective image in place of ``image`` (3, H, W): one draw of an index.

        Raises:
            DataError: ``image`` has another size than the real images.
        """
        _check_generator(generator)
        if tuple(image.shape) != tuple(self.images.shape[1:]):
            raise DataError(
                f"image has shape {tuple(image.shape)} but the real defects are "
                f"{tuple(self.images.shape[1:])}"
            )
        k = _randint(generator, len(self.images))
        return SyntheticDefect(image=self.images[k], mask=self.masks[k], kind=self.kind)
