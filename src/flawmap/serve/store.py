"""The service's results, reviews and threshold changes, in one SQLite file under ``--data-dir``.

Three tables: ``results`` (one row per scored upload: model, image hash, score, label, threshold,
regions, the reviewer's verdict), ``reviews`` (every verdict given, with its time) and
``thresholds`` (every threshold saved for a model, old and new value, with its time). The file is
opened in WAL mode; every change is one transaction, so a restart finds everything that was
answered. One connection is shared by the service's threads behind a lock.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flawmap.errors import ConfigError, DataError

__all__ = [
    "EXPORT_COLUMNS",
    "VERDICTS",
    "ResultStore",
    "StoredResult",
    "now_iso",
    "reviewed_good_images",
]

#: What a reviewer can say about a result.
VERDICTS = ("good", "defective")

#: Columns of :meth:`ResultStore.export_csv` (read back by ``flawmap fit --add-good``).
EXPORT_COLUMNS = (
    "id",
    "time",
    "model",
    "filename",
    "image_sha256",
    "image_path",
    "width",
    "height",
    "score",
    "label",
    "threshold",
    "review",
    "reviewed_at",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    id TEXT PRIMARY KEY,
    created TEXT NOT NULL,
    model TEXT NOT NULL,
    filename TEXT NOT NULL,
    image_sha256 TEXT NOT NULL,
    image_file TEXT NOT NULL,
    map_file TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    score REAL NOT NULL,
    label TEXT,
    threshold REAL,
    latency_ms REAL NOT NULL,
    regions TEXT NOT NULL,
    review TEXT,
    reviewed_at TEXT
);
CREATE INDEX IF NOT EXISTS results_by_model ON results (model, created);
CREATE TABLE IF NOT EXISTS reviews (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    result_id TEXT NOT NULL REFERENCES results (id),
    verdict TEXT NOT NULL,
    time TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS thresholds (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    old REAL,
    new REAL NOT NULL,
    time TEXT NOT NULL
);
"""


def now_iso() -> str:
    """The current UTC time as ISO 8601 with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class StoredResult:
    """One scored upload as stored; ``regions`` are dicts with x, y, width, height, area in
    original-image pixels; ``image_file``/``map_file`` are relative to the data folder."""

    id: str
    created: str
    model: str
    filename: str
    image_sha256: str
    image_file: str
    map_file: str
    width: int
    height: int
    score: float
    label: str | None
    threshold: float | None
    latency_ms: float
    regions: list[dict[str, int]]
    review: str | None = None
    reviewed_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The API's RESULT object."""
        return {
            "id": self.id,
            "model": self.model,
            "filename": self.filename,
            "image_sha256": self.image_sha256,
            "width": self.width,
            "height": self.height,
            "score": self.score,
            "label": self.label,
            "threshold": self.threshold,
            "latency_ms": self.latency_ms,
            "regions": self.regions,
            "overlay_url": f"/v1/results/{self.id}/overlay.png",
            "thumbnail_url": f"/v1/results/{self.id}/thumbnail.png",
            "created": self.created,
            "review": self.review,
            "reviewed_at": self.reviewed_at,
        }


_RESULT_FIELDS = tuple(StoredResult.__dataclass_fields__)


def _result(row: sqlite3.Row) -> StoredResult:
    values = {k: row[k] for k in _RESULT_FIELDS}
    values["regions"] = json.loads(values["regions"])
    return StoredResult(**values)


class ResultStore:
    """Results, reviews and threshold changes in the SQLite file ``path``.

    Raises:
        ConfigError: the file cannot be opened or is not a flawmap result store.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise ConfigError(
                f"cannot use {self.path} as the service's result database ({exc}); move it away "
                "or choose another --data-dir"
            ) from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # ------------------------------------------------------------------ results and reviews
    def add(self, result: StoredResult) -> None:
        """Store a new result."""
        values = {k: getattr(result, k) for k in _RESULT_FIELDS}
        values["regions"] = json.dumps(result.regions)
        columns = ", ".join(_RESULT_FIELDS)
        marks = ", ".join(f":{k}" for k in _RESULT_FIELDS)
        with self._transaction() as db:
            db.execute(f"INSERT INTO results ({columns}) VALUES ({marks})", values)

    def get(self, result_id: str) -> StoredResult | None:
        rows = self._query("SELECT * FROM results WHERE id = ?", (result_id,))
        return _result(rows[0]) if rows else None

    def list(
        self,
        *,
        model: str | None = None,
        label: str | None = None,
        review: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[int, list[StoredResult]]:
        """(number matching, the page of them newest first); ``review="none"``: not reviewed."""
        where, args = self._filters(model, label, review)
        total = self._query(f"SELECT COUNT(*) AS n FROM results{where}", args)[0]["n"]
        rows = self._query(
            f"SELECT * FROM results{where} ORDER BY created DESC, rowid DESC LIMIT ? OFFSET ?",
            (*args, limit, offset),
        )
        return int(total), [_result(r) for r in rows]

    @staticmethod
    def _filters(
        model: str | None, label: str | None, review: str | None
    ) -> tuple[str, tuple[Any, ...]]:
        clauses: list[str] = []
        args: list[Any] = []
        if model is not None:
            clauses.append("model = ?")
            args.append(model)
        if label is not None:
            clauses.append("label = ?")
            args.append(label)
        if review == "none":
            clauses.append("review IS NULL")
        elif review is not None:
            clauses.append("review = ?")
            args.append(review)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(args)

    def review(self, result_id: str, verdict: str) -> StoredResult | None:
        """Record a reviewer's verdict on a result (None: no such result)."""
        if verdict not in VERDICTS:
            raise ConfigError(f"a review verdict is one of {list(VERDICTS)}, got {verdict!r}")
        time = now_iso()
        with self._transaction() as db:
            found = db.execute(
                "UPDATE results SET review = ?, reviewed_at = ? WHERE id = ?",
                (verdict, time, result_id),
            ).rowcount
            if found:
                db.execute(
                    "INSERT INTO reviews (result_id, verdict, time) VALUES (?, ?, ?)",
                    (result_id, verdict, time),
                )
        return self.get(result_id) if found else None

    def files_in_use(self, image_file: str) -> int:
        """How many results refer to the stored image ``image_file``."""
        rows = self._query("SELECT COUNT(*) AS n FROM results WHERE image_file = ?", (image_file,))
        return int(rows[0]["n"])

    def export_csv(self, data_dir: Path, model: str | None = None) -> str:
        """Every result (of ``model``), oldest first, as CSV with :data:`EXPORT_COLUMNS`;
        ``image_path`` is the stored image's absolute path."""
        where, args = self._filters(model, None, None)
        rows = self._query(f"SELECT * FROM results{where} ORDER BY created, rowid", args)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(EXPORT_COLUMNS), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    "id": row["id"],
                    "time": row["created"],
                    "model": row["model"],
                    "filename": row["filename"],
                    "image_sha256": row["image_sha256"],
                    "image_path": str((data_dir / row["image_file"]).absolute()),
                    "width": row["width"],
                    "height": row["height"],
                    "score": repr(row["score"]),
                    "label": row["label"] or "",
                    "threshold": "" if row["threshold"] is None else repr(row["threshold"]),
                    "review": row["review"] or "",
                    "reviewed_at": row["reviewed_at"] or "",
                }
            )
        return buffer.getvalue()

    # ------------------------------------------------------------------ thresholds
    def save_threshold(self, model: str, old: float | None, new: float) -> dict[str, Any]:
        """Record that ``model``'s threshold changed from ``old`` to ``new``; the change."""
        change = {"model": model, "old": old, "new": new, "time": now_iso()}
        with self._transaction() as db:
            db.execute(
                "INSERT INTO thresholds (model, old, new, time) VALUES (:model, :old, :new, :time)",
                change,
            )
        return change

    def threshold_history(self, model: str) -> list[dict[str, Any]]:
        """Every saved threshold change of ``model``, oldest first."""
        rows = self._query(
            "SELECT old, new, time FROM thresholds WHERE model = ? ORDER BY seq", (model,)
        )
        return [dict(r) for r in rows]

    def saved_threshold(self, model: str) -> tuple[float, str] | None:
        """The last threshold saved for ``model`` and when (None: never)."""
        rows = self._query(
            "SELECT new, time FROM thresholds WHERE model = ? ORDER BY seq DESC LIMIT 1", (model,)
        )
        return (float(rows[0]["new"]), str(rows[0]["time"])) if rows else None


def reviewed_good_images(exports: list[Path]) -> list[Path]:
    """The images reviewers marked "good" in CSV files of :meth:`ResultStore.export_csv`.

    Each image appears once (by content hash), in file order; its file must still exist and hold
    the bytes that were scored.

    Raises:
        DataError: a file is not such an export, or an image is missing or changed.
    """
    from flawmap.runtime.format import file_sha256

    seen: set[str] = set()
    images: list[Path] = []
    for export in exports:
        try:
            with open(export, newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                missing = {"image_path", "image_sha256", "review"} - set(reader.fieldnames or ())
                if missing:
                    raise DataError(
                        f"{export} is not a review export of flawmap serve (no column "
                        f"{sorted(missing)}); download it from the service's /v1/export.csv"
                    )
                rows = [r for r in reader if r["review"] == "good"]
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"cannot read the review export {export}: {exc}") from exc
        for row in rows:
            digest, path = row["image_sha256"], Path(row["image_path"])
            if digest in seen:
                continue
            if not path.is_file():
                raise DataError(
                    f"{export}: the image {path} reviewed as good is missing (was the service's "
                    "--data-dir moved or cleaned?)"
                )
            if file_sha256(path) != digest:
                raise DataError(f"{export}: {path} no longer holds the image that was reviewed")
            seen.add(digest)
            images.append(path)
    return images
