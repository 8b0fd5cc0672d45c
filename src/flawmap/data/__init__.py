"""Data loading: image/mask I/O, resize transforms and datasets (MVTec layout, folders, ELPV).

Attributes are imported on first use (PEP 562): :mod:`flawmap.data.io` (reading images and
masks) needs no torch, so the torch-free runtime can use it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flawmap.lazy import lazy_attributes

if TYPE_CHECKING:
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

_WHERE = {
    "FolderDataset": "flawmap.data.datasets",
    "ImageDataset": "flawmap.data.datasets",
    "MVTecDataset": "flawmap.data.datasets",
    "PathsDataset": "flawmap.data.datasets",
    "SampleRecord": "flawmap.data.datasets",
    "load_sample": "flawmap.data.datasets",
    "split_holdout": "flawmap.data.datasets",
    "ElpvDataset": "flawmap.data.elpv",
    "elpv_data_dir": "flawmap.data.elpv",
    "DEFAULT_MAX_PIXELS": "flawmap.data.io",
    "IMAGE_EXTENSIONS": "flawmap.data.io",
    "MIN_IMAGE_SIDE": "flawmap.data.io",
    "list_images": "flawmap.data.io",
    "load_image": "flawmap.data.io",
    "load_mask": "flawmap.data.io",
    "max_pixels": "flawmap.data.io",
    "set_max_pixels": "flawmap.data.io",
    "MAX_IMAGE_SIZE": "flawmap.data.transforms",
    "ImageTransform": "flawmap.data.transforms",
}

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

__getattr__, __dir__ = lazy_attributes(__name__, _WHERE)
