"""Scoring many image files where some may be unreadable: the readable ones are scored, each
unreadable one is reported with its error, none stops the others.

>>> for chunk in predict_readable(detector, PathsDataset(paths, transform=detector.transform)):
...     chunk.prediction   # Prediction of the chunk's readable images (None if there is none)
...     chunk.indices      # their positions in the dataset, one per prediction row
...     chunk.failures     # Failure(index, path, error) of each unreadable image
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch.utils.data import Dataset

from flawmap.errors import ConfigError, DataError

if TYPE_CHECKING:
    from flawmap.models.base import Detector, Prediction

__all__ = ["ChunkResult", "Failure", "predict_readable", "read_items"]


@dataclass(frozen=True)
class Failure:
    """An input that could not be scored: its dataset position, path and error message."""

    index: int
    path: str
    error: str


@dataclass
class ChunkResult:
    """One chunk of :func:`predict_readable`.

    Attributes:
        prediction: the chunk's readable images scored (scores (n,), maps (n, H, W), ...), or
            None when none of them could be read.
        indices: dataset position of each prediction row (n,), increasing.
        failures: the chunk's unreadable images, in dataset order.
    """

    prediction: Prediction | None
    indices: list[int] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)


def _path_of(dataset: Dataset, index: int) -> str:
    samples = getattr(dataset, "samples", None)
    if samples is not None:
        return str(samples[index].path)
    return f"item {index}"


def read_items(
    dataset: Dataset, indices: Sequence[int]
) -> tuple[list[dict[str, Any]], list[int], list[Failure]]:
    """Read ``dataset[i]`` for each ``i``: (readable items, their indices, failures).

    Only :class:`~flawmap.errors.DataError` (a file that cannot be used) is recorded as a
    failure; any other exception, and Ctrl-C, propagates.
    """
    items: list[dict[str, Any]] = []
    good: list[int] = []
    failures: list[Failure] = []
    for i in indices:
        try:
            items.append(dataset[i])
        except DataError as exc:
            failures.append(Failure(i, _path_of(dataset, i), str(exc)))
        else:
            good.append(i)
    return items, good, failures


class _Items(Dataset):
    """Already read items seen as a map-style dataset (what ``Detector.predict`` takes)."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


def predict_readable(
    detector: Detector, dataset: Dataset, *, chunk_size: int = 64, progress: bool = False
) -> Iterator[ChunkResult]:
    """Score ``dataset`` chunk by chunk; unreadable items become :class:`Failure` records.

    Each item is read once. ``chunk_size`` items are held in memory at a time.

    Raises:
        ConfigError: ``chunk_size`` is not a positive int.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ConfigError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    n = len(dataset)
    for start in range(0, n, chunk_size):
        items, good, failures = read_items(dataset, range(start, min(start + chunk_size, n)))
        prediction = None
        if items:
            prediction = detector.predict(_Items(items), progress=progress)
        yield ChunkResult(prediction, good, failures)
