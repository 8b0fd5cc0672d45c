"""flawmap.serve.store: results, reviews and thresholds in SQLite; the review export read back."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from flawmap.errors import ConfigError, DataError
from flawmap.serve.store import EXPORT_COLUMNS, ResultStore, StoredResult, reviewed_good_images


def result(i: int, image_file: str = "images/a.png", label: str = "good") -> StoredResult:
    return StoredResult(
        id=f"r{i}",
        created=f"2026-01-01T00:00:0{i}.000+00:00",
        model="m",
        filename=f"{i}.png",
        image_sha256="a" * 64,
        image_file=image_file,
        map_file=f"maps/r{i}.npy",
        width=10,
        height=8,
        score=0.1 * i,
        label=label,
        threshold=0.25,
        latency_ms=3.0,
        regions=[{"x": 1, "y": 2, "width": 3, "height": 4, "area": 5}],
    )


def test_results_reviews_and_thresholds_survive_reopening(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "db.sqlite3")
    for i in range(3):
        store.add(result(i, label="good" if i < 2 else "defective"))
    assert store.review("r1", "defective").review == "defective"
    assert store.review("missing", "good") is None
    with pytest.raises(ConfigError, match="verdict"):
        store.review("r1", "ok")
    assert store.saved_threshold("m") is None
    store.save_threshold("m", 0.25, 0.5)
    store.save_threshold("m", 0.5, 0.75)
    store.close()

    again = ResultStore(tmp_path / "db.sqlite3")
    assert again.get("r2") == result(2, label="defective")
    total, rows = again.list(model="m")
    assert total == 3 and [r.id for r in rows] == ["r2", "r1", "r0"]  # newest first
    assert again.list(label="good")[0] == 2
    assert [r.id for r in again.list(review="defective")[1]] == ["r1"]
    assert again.list(review="none")[0] == 2
    assert [r.id for r in again.list(limit=1, offset=1)[1]] == ["r1"]
    assert again.get("r1").reviewed_at is not None
    assert again.saved_threshold("m")[0] == 0.75
    assert [(c["old"], c["new"]) for c in again.threshold_history("m")] == [
        (0.25, 0.5),
        (0.5, 0.75),
    ]
    assert again.files_in_use("images/a.png") == 3


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    path.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(ConfigError, match="another --data-dir"):
        ResultStore(path)


def test_review_export_round_trip(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    image = tmp_path / "images" / "a.png"
    image.write_bytes(b"pretend image")
    import hashlib

    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    store = ResultStore(tmp_path / "db.sqlite3")
    for i in range(3):
        store.add(
            StoredResult(**{**result(i).__dict__, "image_sha256": digest})  # same image thrice
        )
    store.review("r0", "good")
    store.review("r2", "good")
    text = store.export_csv(tmp_path)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0]) == EXPORT_COLUMNS and [r["id"] for r in rows] == ["r0", "r1", "r2"]
    assert [r["review"] for r in rows] == ["good", "", "good"]
    export = tmp_path / "reviews.csv"
    export.write_text(text)
    assert reviewed_good_images([export]) == [image.absolute()]  # once per content

    image.write_bytes(b"changed since")
    with pytest.raises(DataError, match="no longer holds"):
        reviewed_good_images([export])
    image.unlink()
    with pytest.raises(DataError, match="missing"):
        reviewed_good_images([export])
    other = tmp_path / "other.csv"
    other.write_text("path,score\nx,1\n")
    with pytest.raises(DataError, match="not a review export"):
        reviewed_good_images([other])
    with pytest.raises(DataError, match="cannot read"):
        reviewed_good_images([tmp_path / "absent.csv"])
