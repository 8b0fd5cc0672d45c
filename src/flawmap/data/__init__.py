"""Data loading: image/mask I/O, resize transforms and datasets (MVTec layout, folders, ELPV)."""

from __future__ import annotations

from flawmap.data.datasets import (
    FolderDataset,
    ImageDataset,
    MVTecDataset,
    PathsDataset,
    SampleRecord,
    load_sample,
    split_holdout,
)
from flawmap.data.elpv import ElpvDataset, elpv_data_dir
from flawmap.data.io import IMAGE_EXTENSIONS, list_images, load_image, load_mask
from flawmap.data.transforms import ImageTransform

__all__ = [
    "IMAGE_EXTENSIONS",
    "ElpvDataset",
    "FolderDataset",
    "ImageDataset",
    "ImageTransform",
    "MVTecDataset",
    "PathsDataset",
    "SampleRecord",
    "elpv_data_dir",
    "list_images",
    "load_image",
    "load_mask",
    "load_sample",
    "split_holdout",
]
