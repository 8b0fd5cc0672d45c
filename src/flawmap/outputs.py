"""Writing command outputs safely: usable folders, atomic files, one name per input, one writer.

- :func:`check_output_folder` refuses, before any work, an output folder that cannot be used;
- :func:`atomic_write` writes a file beside its target and renames it into place, so a reader
  (or an interrupted run) only ever sees the old file or the complete new one;
- :func:`output_paths` gives every input its own output path, by construction;
- :class:`FolderLock` keeps a second run from writing into the same folder at the same time.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from types import TracebackType

from flawmap.errors import ConfigError
from flawmap.interrupts import HeldInterrupts

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; concurrent runs are not detected there
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "LOCK_FILE",
    "FolderLock",
    "atomic_write",
    "check_output_folder",
    "nearest_existing",
    "output_paths",
    "unique_paths",
    "unwritable_reason",
    "write_text_atomic",
]

LOCK_FILE = ".flawmap.lock"


def nearest_existing(path: Path) -> Path:
    """``path`` itself if it exists, else its closest existing ancestor."""
    current = path.absolute()
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def unwritable_reason(folder: Path) -> str | None:
    """Why no file can be created in the existing folder ``folder``, or None when one can.

    A short-lived probe file is created and removed, so read-only mounts and permissions are seen
    as they are, also for root (``os.access`` says yes to root everywhere).
    """
    probe = folder / f".flawmap-probe-{uuid.uuid4().hex[:12]}"
    try:
        probe.touch(exist_ok=False)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    with contextlib.suppress(OSError):
        probe.unlink()
    return None


def check_output_folder(path: str | os.PathLike[str], option: str = "--out") -> Path:
    """Check that ``path`` can be used as an output folder; creates nothing.

    Accepted: an existing folder, or a new one whose nearest existing parent is a folder; either
    must let flawmap create a file (tried with a short-lived probe file, so read-only mounts and
    permissions are seen as they are, also for root).

    Raises:
        ConfigError: ``path`` is a file, lies under a file, or its folder cannot be written;
            the message names ``option`` and the path.
    """
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(
            f"{option} {path} is a file, not a folder: choose a folder (it is created if missing)"
        )
    existing = nearest_existing(out)
    if not existing.is_dir():
        raise ConfigError(f"cannot create {option} folder {path}: {existing} is a file")
    why = unwritable_reason(existing)
    if why is not None:
        raise ConfigError(
            f"{option} folder {path} cannot be written ({existing}: {why}): choose another "
            "folder or fix its permissions"
        )
    return out


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Create ``path`` through ``write(temporary_path)``, then rename it into place.

    The temporary file lies in the same folder (so the rename is atomic) and is removed when
    ``write`` fails or is interrupted; parent folders are created. Returns ``path``.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        write(temporary)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    return target


def fsync_path(path: Path) -> None:
    """Flush a file's (or folder's) data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_synced(path: Path, payload: object) -> None:
    """Write ``payload`` as indented JSON to ``path`` and flush it to disk."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(payload, indent=2) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def check_folder_target(
    directory: str | os.PathLike[str],
    overwrite: bool,
    is_own: Callable[[str], bool],
    what: str,
) -> Path:
    """Check that a folder of kind ``what`` (``"model"``, ``"export"``) can be written to
    ``directory`` by :func:`write_folder_atomic`.

    Accepted: a new folder (its nearest existing parent must be a writable folder), an empty
    folder, or, with ``overwrite``, a folder whose every entry ``is_own(name)`` recognises as
    one of ours. Refused with a :class:`ConfigError` naming the path: a file, a folder that cannot
    be written, a folder holding other files (never deleted), one of ours without
    ``overwrite``. Creates nothing. Returns the folder to write (a symlink is followed).
    """
    path = Path(directory).expanduser()
    if path.is_symlink():
        path = path.resolve()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{directory} is a file, not a folder: choose another output folder")
    if path.is_dir():
        entries = sorted(p.name for p in path.iterdir())
        others = [name for name in entries if not is_own(name)]
        if others:
            shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
            raise ConfigError(
                f"{directory} is not empty and is not a flawmap {what} folder (it holds {shown}): "
                "choose a new or empty folder (flawmap never deletes files it did not write)"
            )
        if entries and not overwrite:
            raise ConfigError(
                f"{directory} already holds a {what}: pass --overwrite (command line) or "
                "overwrite=True (Python) to replace it, or choose another folder"
            )
        _check_folder_writable(path.parent.resolve(), directory, what)
        return path
    ancestor = nearest_existing(path.parent)
    if not ancestor.is_dir():
        raise ConfigError(f"cannot create {directory}: {ancestor} is a file, not a folder")
    _check_folder_writable(ancestor, directory, what)
    return path


def _check_folder_writable(folder: Path, directory: str | os.PathLike[str], what: str) -> None:
    """The folder is written as a sibling of ``directory``, created in ``folder``."""
    why = unwritable_reason(folder)
    if why is not None:
        raise ConfigError(
            f"cannot write the {what} to {directory}: {folder} is not writable ({why}); "
            "choose another output folder"
        )


def write_folder_atomic(target: Path, write: Callable[[Path], object]) -> None:
    """Fill a hidden sibling folder of ``target`` with ``write(staging)``, flush it, and swap
    it into place: ``target`` always holds either the old folder or the complete new one.

    An existing ``target`` is moved aside first and deleted after, or moved back when the
    rename fails; a Ctrl-C waits until both renames ran. The staging folder is removed when
    ``write`` fails or is interrupted.
    """
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = parent / f".{target.name}.partial-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    try:
        write(staging)
        fsync_path(staging)
        _swap_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _swap_into_place(staging: Path, target: Path) -> None:
    old = None
    with HeldInterrupts():
        if target.exists():
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:12]}"
            os.rename(target, old)
            try:
                os.rename(staging, target)
            except BaseException:
                os.rename(old, target)
                raise
        else:
            os.rename(staging, target)
    with contextlib.suppress(OSError):
        fsync_path(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """:func:`atomic_write` of a UTF-8 text file."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _key(path: PurePosixPath) -> str:
    # Compared without case, so names stay distinct on case-insensitive file systems too.
    return path.as_posix().casefold()


def unique_paths(natural: Sequence[PurePosixPath], sources: Sequence[Path]) -> list[PurePosixPath]:
    """Make output paths unique, keeping every path that is unique already.

    ``natural[i]`` is the path input ``sources[i]`` would get on its own. Paths shared by
    several inputs (compared without case) get the source's extension added to the stem
    (``x.png`` and ``x.jpg`` -> ``x_png.png``, ``x_jpg.png``), then ``_2``, ``_3``, ... while
    still taken (the same file given twice). The result is unique by construction, in input
    order, and the same for the same inputs.
    """
    if len(natural) != len(sources):
        raise ValueError("natural and sources must have the same length")
    counts = Counter(_key(p) for p in natural)
    taken = {_key(p) for p in natural if counts[_key(p)] == 1}
    out: list[PurePosixPath] = []
    for path, source in zip(natural, sources, strict=True):
        if counts[_key(path)] == 1:
            out.append(path)
            continue
        ext = source.suffix.lstrip(".")
        base = path.with_name(f"{path.stem}_{ext}{path.suffix}") if ext else path
        candidate, n = base, 2
        while _key(candidate) in taken:
            candidate = base.with_name(f"{base.stem}_{n}{base.suffix}")
            n += 1
        taken.add(_key(candidate))
        out.append(candidate)
    return out


def _natural_name(file: Path, root: Path, several_roots: bool) -> PurePosixPath:
    """``file``'s path inside the input ``root`` (prefixed by the root's name when there are
    several inputs), or its file name when it was given directly."""
    if root.is_dir():
        inside = PurePosixPath(*file.relative_to(root).parts)
        if not several_roots:
            return inside
        return PurePosixPath(root.absolute().resolve().name or "root") / inside
    return PurePosixPath(file.name)


def _mvtec_map_path(file: Path, root: Path) -> PurePosixPath | None:
    """``<category>/test/<defect>/<stem>.tiff`` for a file of a category's test folder (the
    layout the MVTec AD evaluation reads), else None."""
    if not root.is_dir():
        return None
    resolved_root = root.absolute().resolve()
    inside = file.relative_to(root).parts
    if resolved_root.name == "test":
        category = resolved_root.parent.name
        return PurePosixPath(category, "test", *inside).with_suffix(".tiff")
    if (root / "test").is_dir() and inside and inside[0] == "test":
        return PurePosixPath(resolved_root.name, *inside).with_suffix(".tiff")
    return None


def output_paths(
    files: Sequence[Path], roots: Sequence[Path]
) -> tuple[list[PurePosixPath], list[PurePosixPath]]:
    """Overlay and map paths (relative to the output folder) of each input file.

    ``files[i]`` was found under (or is) the input argument ``roots[i]``. Overlays go to
    ``overlays/<name>.png``, maps to ``maps/<name>.tiff``, or to the MVTec layout
    ``<category>/test/<defect>/<stem>.tiff`` for the files of a category's test folder;
    ``<name>`` is the path inside the input folder, prefixed by that folder's name when several
    inputs are given, or the file name of a file given directly. Both lists go through
    :func:`unique_paths`, so no two inputs share an output path.
    """
    several = len({Path(r) for r in roots}) > 1
    overlays, maps = [], []
    for file, root in zip(files, roots, strict=True):
        name = _natural_name(file, root, several)
        overlays.append(PurePosixPath("overlays") / name.with_suffix(".png"))
        mvtec = _mvtec_map_path(file, root)
        maps.append(mvtec or PurePosixPath("maps") / name.with_suffix(".tiff"))
    return unique_paths(overlays, files), unique_paths(maps, files)


class FolderLock:
    """Exclusive lock of an output folder for one run (``fcntl.flock`` on ``LOCK_FILE``).

    The folder is created. A second run that tries to lock the same folder while the first holds
    it gets a ConfigError at once (it does not wait). The operating system releases the lock
    when the process ends, however it ends; the lock file itself stays (it is empty).
    """

    def __init__(self, folder: str | os.PathLike[str], what: str = "flawmap") -> None:
        self.folder = Path(folder)
        self.what = what
        self._fd: int | None = None

    def __enter__(self) -> FolderLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            return self
        path = self.folder / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(
                f"another {self.what} is writing to {self.folder} right now (it holds {path}); "
                "wait for it to finish or choose another --out"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None
