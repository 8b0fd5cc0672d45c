"""Model folders: ``config.json`` + ``model.safetensors``, written atomically, read with checks.

A save writes both files into a hidden sibling folder, flushes them and renames the folder into
place, so a folder always holds one complete model; replacing a model needs ``overwrite=True``.
The weights file's metadata records the model, the format version, a random fit id shared with
``config.json``, the parameters that shape the fitted state and a checksum of the tensors;
:func:`load_model` rebuilds the detector offline and refuses a folder whose two files disagree.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import typing
import uuid
import warnings
from pathlib import Path
from typing import Any

import torch

import flawmap
from flawmap.data import InputGeometry
from flawmap.errors import ConfigError, DataError, FlawmapWarning
from flawmap.models.base import (
    CONFIG_FILE,
    FORMAT,
    FORMAT_VERSION,
    WEIGHTS_FILE,
    Detector,
    _check_known,
    _jsonable,
    create_model,
    model_class,
)
from flawmap.models.params import describe_changes
from flawmap.outputs import (
    check_folder_target,
    fsync_path,
    write_folder_atomic,
    write_json_synced,
)
from flawmap.runtime.format import EVALUATION_FILE

__all__ = ["check_save_target", "load_model", "save_detector"]


#: Text files a model folder may hold besides the model (written by ``flawmap tune``, and the
#: last ``flawmap evaluate``'s metrics).
EXTRA_FILES = frozenset({"tuning.json", "tuning.md", EVALUATION_FILE})


def save_detector(
    detector: Detector,
    directory: str | Path,
    *,
    overwrite: bool = False,
    extras: dict[str, str] | None = None,
) -> Path:
    """:meth:`Detector.save`: both files into a temporary sibling folder, then swapped in;
    ``extras`` maps names of :data:`EXTRA_FILES` to text written into the same folder."""
    unknown = sorted(set(extras or {}) - EXTRA_FILES)
    if unknown:
        raise ConfigError(f"a model folder holds no {unknown}; allowed: {sorted(EXTRA_FILES)}")
    module = detector._fitted_module()
    target = check_save_target(directory, overwrite)
    state_params = detector._state_params()
    if detector.fitted_params_ is not None:
        changed = describe_changes(detector.fitted_params_, state_params)
        if changed:
            raise ConfigError(
                "parameters changed since this model was fitted "
                f"({'; '.join(changed)}): fit again, or set them back before saving"
            )
    fit_id = detector.fit_id_ or uuid.uuid4().hex
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "flawmap_version": flawmap.__version__,
        "model": detector.name,
        "fit_id": fit_id,
        "params": {name: _jsonable(v) for name, v in detector.get_params().items()},
        "fit": detector.fit_summary(),
    }
    state = {k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "model": detector.name,
        "fit_id": fit_id,
        "params": json.dumps(state_params, sort_keys=True),
        "geometry": json.dumps(config["fit"]["geometry"], sort_keys=True),
        "sha256": _state_digest(state),
    }
    _write_model_folder(target, config, state, metadata, extras or {})
    detector.fit_id_ = fit_id
    return Path(directory)


def check_save_target(directory: str | Path, overwrite: bool = False) -> Path:
    """Check that a model can be saved to ``directory`` (call it before a long fit).

    Accepted: a new folder (its nearest existing parent must be a writable folder), an empty
    folder, or, with ``overwrite``, a folder that holds only a flawmap model. Refused with a
    :class:`~flawmap.errors.ConfigError` naming the path: a file, a folder that cannot be written,
    a folder holding other files (never deleted), a model folder without ``overwrite``. Creates
    nothing. Returns the folder to write (a symlink is followed).
    """
    return check_folder_target(
        directory, overwrite, {CONFIG_FILE, WEIGHTS_FILE, *EXTRA_FILES}.__contains__, "model"
    )


def _state_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the tensors' names, dtypes, shapes and bytes (sorted by name)."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()


def _write_model_folder(
    target: Path,
    config: dict[str, Any],
    state: dict[str, torch.Tensor],
    metadata: dict[str, str],
    extras: dict[str, str],
) -> None:
    """Write both files into a hidden sibling of ``target``, then swap it into place
    (:func:`~flawmap.outputs.write_folder_atomic`).

    The weights are written first and ``config.json`` last, so a leftover temporary folder
    (a killed process) never holds a config without its complete weights.
    """
    from safetensors.torch import save_file

    def write(staging: Path) -> None:
        save_file(state, str(staging / WEIGHTS_FILE), metadata=metadata)
        fsync_path(staging / WEIGHTS_FILE)
        for name, text in extras.items():
            (staging / name).write_text(text, encoding="utf-8")
            fsync_path(staging / name)
        write_json_synced(staging / CONFIG_FILE, config)

    write_folder_atomic(target, write)


def load_model(directory: str | Path) -> Detector:
    """Rebuild a fitted detector from a folder written by ``Detector.save`` (offline).

    Refused with a :class:`~flawmap.errors.DataError` naming the file: a missing or damaged file,
    a ``config.json`` with a missing or mistyped field, an unknown model, a newer format version,
    and (format 2) a pair of files from two different fits or a ``config.json`` whose
    state-shaping parameters differ from those recorded in the weights. Format 1 folders (no
    record to check against) load with a :class:`~flawmap.errors.FlawmapWarning`.
    """
    folder = Path(directory)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise DataError(f"{path} not found: is {folder} a model folder written by flawmap fit?")
    config = _read_config(config_path)
    cls = _model_class_for(config["model"], config_path)
    params = _params_from_json(cls, config["params"], config_path)
    try:
        detector = create_model(config["model"], **params)
    except ConfigError as exc:
        raise DataError(f"{config_path} holds an invalid parameter: {exc}") from exc
    state, metadata = _read_weights(weights_path)
    version = config["format_version"]
    if version >= 2:
        _cross_check(config, metadata, detector, config_path, weights_path)
        if metadata.get("sha256") != _state_digest(state):
            raise DataError(
                f"{weights_path} is corrupted: its tensors do not match the checksum recorded "
                "when it was saved; restore the folder from a backup or fit the model again"
            )
    else:
        warnings.warn(
            FlawmapWarning(
                f"{folder} was saved in model format {version}, which records nothing to check "
                f"{CONFIG_FILE} against {WEIGHTS_FILE}; save it again to upgrade it"
            ),
            stacklevel=2,
        )
    try:
        detector._restore(state, config["fit"], config.get("fit_id"))
    except (ConfigError, RuntimeError) as exc:
        raise DataError(
            f"{weights_path} does not fit the model that {config_path} describes: {exc}"
        ) from exc
    return detector


#: Required fields of config.json and their JSON types, by the format version that added them.
_CONFIG_FIELDS: dict[str, tuple[type, ...]] = {"model": (str,), "params": (dict,)}
_CONFIG_FIELDS_V2: dict[str, tuple[type, ...]] = {"fit_id": (str,), "fit": (dict,)}


def _read_config(path: Path) -> dict[str, Any]:
    """Parse and check the structure of a config.json (DataError naming the file and field)."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} cannot be read as JSON: {exc}") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise DataError(f'{path} is not a flawmap model config (no "format": "{FORMAT}")')
    version = config.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise DataError(
            f"{path}: field 'format_version' must be an integer, got {version!r}"
            + (" (missing)" if "format_version" not in config else "")
        )
    if version > FORMAT_VERSION:
        raise DataError(
            f"{path} was written by a newer flawmap (model format {version}; this flawmap "
            f"{flawmap.__version__} reads formats up to {FORMAT_VERSION}): upgrade flawmap "
            "(pip install --upgrade flawmap) to load it"
        )
    if version < 1:
        raise DataError(f"{path}: unknown model format version {version}")
    fields = {**_CONFIG_FIELDS, **(_CONFIG_FIELDS_V2 if version >= 2 else {})}
    for name, types in fields.items():
        if name not in config:
            raise DataError(f"{path}: required field {name!r} is missing")
        if not isinstance(config[name], types):
            raise DataError(
                f"{path}: field {name!r} must be a JSON "
                f"{'object' if types == (dict,) else 'string'}, got {config[name]!r}"
            )
    fit = config.setdefault("fit", {})
    if not isinstance(fit, dict):
        raise DataError(f"{path}: field 'fit' must be a JSON object, got {fit!r}")
    if fit.get("geometry") is not None:
        try:
            InputGeometry.from_json(fit["geometry"])
        except ConfigError as exc:
            raise DataError(f"{path}: field 'fit.geometry': {exc}") from exc
    held = fit.get("holdout_scores")
    if held is not None and not (
        isinstance(held, list)
        and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in held)
    ):
        raise DataError(f"{path}: field 'fit.holdout_scores' must be a list of numbers or null")
    if fit.get("data") is not None and not isinstance(fit["data"], str):
        raise DataError(f"{path}: field 'fit.data' must be a string or null, got {fit['data']!r}")
    for name, kind in (("train_seconds", numbers.Real), ("n_train", int)):
        value = fit.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
            raise DataError(f"{path}: field 'fit.{name}' must be a number or null, got {value!r}")
    return config


def _model_class_for(name: str, config_path: Path) -> type[Detector]:
    try:
        return model_class(name)
    except ConfigError as exc:
        raise DataError(
            f"{config_path}: model {name!r} is not known to this flawmap ({exc}); "
            "was it saved by a newer flawmap or a plugin that is not installed?"
        ) from exc


def _expects_tuple(annotation: Any) -> bool:
    """Whether a parameter annotation admits a tuple (``tuple[...]``, ``X | tuple[...]``)."""
    if annotation is tuple or typing.get_origin(annotation) is tuple:
        return True
    return any(_expects_tuple(arg) for arg in typing.get_args(annotation))


def _params_from_json(
    cls: type[Detector], raw: dict[str, Any], config_path: Path
) -> dict[str, Any]:
    """config.json params -> constructor arguments (lists become tuples where annotated so)."""
    try:
        _check_known(cls, raw)
    except ConfigError as exc:
        raise DataError(f"{config_path}: {exc}") from exc
    types = cls.param_types()
    raw = {**_legacy_values(raw), **raw}
    return {
        name: tuple(value) if isinstance(value, list) and _expects_tuple(types[name]) else value
        for name, value in raw.items()
    }


#: Parameters added after models were first saved, with the behaviour those models were fitted
#: with; a saved model without them loads with these values.
LEGACY_PARAM_VALUES: dict[str, Any] = {"aspect": "squeeze", "tiling": "off"}


def _legacy_values(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in LEGACY_PARAM_VALUES.items() if k not in params}


def _read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of a safetensors file (DataError naming it when damaged)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            state = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(
            f"{path} is damaged or truncated ({exc}): restore the folder from a backup or fit "
            "the model again"
        ) from exc
    return state, metadata


def _cross_check(
    config: dict[str, Any],
    metadata: dict[str, str],
    detector: Detector,
    config_path: Path,
    weights_path: Path,
) -> None:
    """Refuse a config.json and weights file that are not one save of one fit."""
    recorded = {key: metadata.get(key) for key in ("format_version", "model", "fit_id", "params")}
    if None in recorded.values():
        raise DataError(
            f"{weights_path} does not record which model it belongs to, but {config_path} is "
            f"format {config['format_version']}: the folder mixes files of different saves; "
            "restore both files from one save, or fit again"
        )
    if recorded["model"] != config["model"] or recorded["fit_id"] != config["fit_id"]:
        raise DataError(
            f"{config_path} and {weights_path} come from two different fits "
            f"({config['model']} fit {config['fit_id'][:12]} vs {recorded['model']} fit "
            f"{str(recorded['fit_id'])[:12]}): the folder mixes two models; restore both files "
            "from one save, or fit again"
        )
    try:
        fitted = json.loads(str(recorded["params"]))
    except json.JSONDecodeError as exc:
        raise DataError(f"{weights_path}: its recorded parameters are not valid JSON") from exc
    if not isinstance(fitted, dict):
        raise DataError(f"{weights_path}: its recorded parameters are not a JSON object")
    fitted = {**_legacy_values(fitted), **fitted}
    changed = describe_changes(fitted, detector._state_params())
    recorded_geometry = metadata.get("geometry")
    if recorded_geometry is not None and recorded_geometry != json.dumps(
        config["fit"].get("geometry"), sort_keys=True
    ):
        changed.append(f"fit.geometry {recorded_geometry} -> {config['fit'].get('geometry')}")
    if changed:
        raise DataError(
            f"{config_path} does not match the fitted weights in {weights_path}; "
            f"changed since the fit (fitted -> config.json): {'; '.join(changed)}. "
            "Undo the edit, or fit a new model with the new parameters"
        )
