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
from flawmap.data.io import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    MIN_IMAGE_SIDE,
    list_images,
    load_image,
    load_mask,
    max_pixels,
    set_max_pixels,
)
from flawmap.data.transforms import MAX_IMAGE_SIZE, ImageTransform

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "MAX_IMAGE_SIZE",
    "MIN_IMAGE_SIDE",
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
    "max_pixels",
    "set_max_pixels",
    "split_holdout",
]
