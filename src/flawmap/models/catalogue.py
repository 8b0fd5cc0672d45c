"""Static catalogue of the built-in models: names, where they live, one-line summaries.

Listing models (``flawmap models``, :func:`flawmap.models.list_models`) reads this table and
imports neither torch nor the model modules; :func:`flawmap.models.model_class` imports a
model's module the first time that model is asked for. A contract test checks every entry
against the real class (its ``name``, module and docstring summary).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

__all__ = ["BUILTIN_MODELS", "ModelEntry", "builtin_entry", "builtin_names", "summary_of"]


@dataclass(frozen=True)
class ModelEntry:
    """One built-in model.

    Attributes:
        name: the registry name (``--model``), equal to the class's ``name``.
        module: the module that defines and registers the class.
        class_name: the class's name in that module.
        summary: the first paragraph of the class docstring on one line (:func:`summary_of`).
    """

    name: str
    module: str
    class_name: str
    summary: str


BUILTIN_MODELS: tuple[ModelEntry, ...] = (
    ModelEntry(
        "cse",
        "flawmap.models.cse",
        "CSE",
        "CSE: contrastively trained 1x1-conv embedder on deep features, cosine distance to "
        "k-means centres of the training embeddings; see the module docstring.",
    ),
    ModelEntry(
        "fcdd",
        "flawmap.models.fcdd",
        "FCDD",
        'FCDD with a selectable loss: eq. 4 ("fcdd") or the pixel-wise HSC eq. 5 '
        '("hsc_pixel", default), trained on confetti noise or on a few real anomalies.',
    ),
    ModelEntry(
        "mlff",
        "flawmap.models.mlff.model",
        "MLFF",
        "Multi-level feature fusion network trained on confetti / CutPaste pseudo-anomalies.",
    ),
    ModelEntry(
        "padim",
        "flawmap.models.padim",
        "Padim",
        "PaDiM detector. Image score = maximum of the smoothed Mahalanobis map.",
    ),
    ModelEntry(
        "patchcore",
        "flawmap.models.patchcore.model",
        "PatchCore",
        "PatchCore detector. Image score = maximum of the smoothed nearest-neighbour map.",
    ),
    ModelEntry(
        "simplenet",
        "flawmap.models.simplenet",
        "SimpleNet",
        "SimpleNet: adaptor + discriminator on Gaussian-noise defect features; score = -D(G(o)).",
    ),
    ModelEntry(
        "trisimplenet",
        "flawmap.models.simplenet",
        "TrisimpleNet",
        "TrisimpleNet: SimpleNet + fake-normal features and the triplet-style loss (seed 000).",
    ),
)

_BY_NAME = {entry.name: entry for entry in BUILTIN_MODELS}


def builtin_entry(name: str) -> ModelEntry | None:
    """The catalogue entry of the built-in model ``name``, or None."""
    return _BY_NAME.get(name)


def builtin_names() -> list[str]:
    """Names of the built-in models, sorted."""
    return sorted(_BY_NAME)


def summary_of(doc: str | None) -> str:
    """First paragraph of a docstring on one line: whitespace collapsed, reST ````code````
    marks dropped; "" without a docstring."""
    if not doc:
        return ""
    cleaned = inspect.cleandoc(doc)
    return " ".join(cleaned.split("\n\n", 1)[0].replace("``", "").split())
