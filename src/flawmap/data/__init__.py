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
        original_shapes,
        split_holdout,
        with_transform,
    )
    from flawmap.data.elpv import ElpvDataset, elpv_data_dir
    from flawmap.data.io import (
        DEFAULT_MAX_PIXELS,
        IMAGE_EXTENSIONS,
        MIN_IMAGE_SIDE,
        image_shape,
        list_images,
        load_image,
        load_mask,
        max_pixels,
        set_max_pixels,
    )
    from flawmap.data.transforms import (
        ASPECT_MODES,
        MAX_IMAGE_SIZE,
        ImageTransform,
        InputGeometry,
        parse_tiling,
        plan_geometry,
    )

_WHERE = {
    "FolderDataset": "flawmap.data.datasets",
    "ImageDataset": "flawmap.data.datasets",
    "MVTecDataset": "flawmap.data.datasets",
    "PathsDataset": "flawmap.data.datasets",
    "SampleRecord": "flawmap.data.datasets",
    "load_sample": "flawmap.data.datasets",
    "split_holdout": "flawmap.data.datasets",
    "original_shapes": "flawmap.data.datasets",
    "with_transform": "flawmap.data.datasets",
    "ElpvDataset": "flawmap.data.elpv",
    "elpv_data_dir": "flawmap.data.elpv",
    "DEFAULT_MAX_PIXELS": "flawmap.data.io",
    "IMAGE_EXTENSIONS": "flawmap.data.io",
    "MIN_IMAGE_SIDE": "flawmap.data.io",
    "list_images": "flawmap.data.io",
    "image_shape": "flawmap.data.io",
    "load_image": "flawmap.data.io",
    "load_mask": "flawmap.data.io",
    "max_pixels": "flawmap.data.io",
    "set_max_pixels": "flawmap.data.io",
    "MAX_IMAGE_SIZE": "flawmap.data.transforms",
    "ImageTransform": "flawmap.data.transforms",
    "ASPECT_MODES": "flawmap.data.transforms",
    "InputGeometry": "flawmap.data.transforms",
    "parse_tiling": "flawmap.data.transforms",
    "plan_geometry": "flawmap.data.transforms",
}

__all__ = [
    "ASPECT_MODES",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "MAX_IMAGE_SIZE",
    "MIN_IMAGE_SIDE",
    "ElpvDataset",
    "FolderDataset",
    "ImageDataset",
    "ImageTransform",
    "InputGeometry",
    "MVTecDataset",
    "PathsDataset",
    "SampleRecord",
    "elpv_data_dir",
    "image_shape",
    "list_images",
    "load_image",
    "load_mask",
    "load_sample",
    "max_pixels",
    "original_shapes",
    "parse_tiling",
    "plan_geometry",
    "set_max_pixels",
    "split_holdout",
    "with_transform",
]

__getattr__, __dir__ = lazy_attributes(__name__, _WHERE)
