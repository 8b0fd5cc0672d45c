"""The one small training loop shared by every trained model (SimpleNet, FCDD, CSE, MLFF).

A model supplies a ``step(batch_index, generator) -> loss tensor`` closure over its own data, its
optimisers, its learning-rate schedules (:class:`Schedule`) and a checkpoint policy
(:class:`LastEpoch` or :class:`BestOnValidation`); the loop owns epochs, the seed, the progress
bar, the per-epoch loss and wall-clock history and the checkpoint. It never sees test data: the
only criterion a checkpoint policy evaluates is the model's own, on training-only data.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from flawmap.errors import ConfigError

__all__ = [
    "BestOnValidation",
    "CheckpointPolicy",
    "LastEpoch",
    "Schedule",
    "TrainingHistory",
    "run_epochs",
]


@dataclass
class TrainingHistory:
    """What :func:`run_epochs` records, one entry per epoch.

    Attributes:
        epoch_losses: mean training loss of every epoch, in order.
        epoch_seconds: wall-clock seconds of every epoch (steps, schedules and checkpoint).
        val_losses: the checkpoint policy's validation criterion of every epoch (empty for
            :class:`LastEpoch`).
        best_epoch: the epoch whose weights the model keeps (the last one for
            :class:`LastEpoch`).
    """

    epoch_losses: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    best_epoch: int = -1


@dataclass(frozen=True)
class Schedule:
    """A learning-rate scheduler and when the loop steps it.

    ``every="step"``: after every optimiser step (e.g. ``OneCycleLR``); ``every="epoch"``: after
    every epoch, before the checkpoint policy runs (e.g. ``ExponentialLR``).
    """

    scheduler: torch.optim.lr_scheduler.LRScheduler
    every: Literal["step", "epoch"] = "step"

    def __post_init__(self) -> None:
        if self.every not in ("step", "epoch"):
            raise ConfigError(f"a schedule steps every 'step' or 'epoch', got {self.every!r}")


class CheckpointPolicy(Protocol):
    """Which epoch's weights a model keeps; called by :func:`run_epochs` at every epoch end."""

    def epoch_end(self, epoch: int) -> float | None:
        """Remember what this epoch needs; returns its validation criterion (None: none)."""
        ...

    def restore(self) -> int:
        """Put the kept weights back after the last epoch; returns the kept epoch."""
        ...


class LastEpoch:
    """Keep the weights of the last epoch (nothing is evaluated or copied)."""

    def __init__(self) -> None:
        self._last = -1

    def epoch_end(self, epoch: int) -> float | None:
        self._last = epoch
        return None

    def restore(self) -> int:
        return self._last


class BestOnValidation:
    """Keep the state of ``module`` at the first epoch with the lowest ``criterion()``.

    ``criterion`` is evaluated at every epoch end under ``torch.no_grad`` with ``module`` in eval
    mode (its previous mode is restored afterwards); it must only look at training-only data
    (e.g. a seeded validation split of the good training images). After the last epoch the best
    state (a deep copy of ``module.state_dict()``) is loaded back into ``module``.
    """

    def __init__(self, module: nn.Module, criterion: Callable[[], float]) -> None:
        self.module = module
        self.criterion = criterion
        self.losses: list[float] = []
        self._best: dict[str, torch.Tensor] | None = None
        self._best_epoch = -1

    def epoch_end(self, epoch: int) -> float | None:
        was_training = self.module.training
        self.module.eval()
        try:
            with torch.no_grad():
                loss = float(self.criterion())
        finally:
            self.module.train(was_training)
        self.losses.append(loss)
        if self._best is None or loss < self.losses[self._best_epoch]:
            self._best = copy.deepcopy(self.module.state_dict())
            self._best_epoch = epoch
        return loss

    def restore(self) -> int:
        if self._best is not None:
            self.module.load_state_dict(self._best)
        return self._best_epoch


def run_epochs(
    step: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
    optimizers: Sequence[torch.optim.Optimizer],
    n_items: int,
    batch_size: int,
    epochs: int,
    seed: int,
    *,
    schedules: Sequence[Schedule] = (),
    checkpoint: CheckpointPolicy | None = None,
    module: nn.Module | None = None,
    progress: bool = False,
    desc: str = "train",
) -> TrainingHistory:
    """Run ``epochs`` passes over ``n_items`` items in seeded random batches.

    Per batch: every optimiser's gradients are zeroed, ``step(indices, generator)`` computes
    the loss (``indices`` (B,) int64 into the model's cached training data; ``generator``
    seeds its noise), the loss is backpropagated, every optimiser steps, then every
    ``every="step"`` schedule. Per epoch: the ``every="epoch"`` schedules step, then
    ``checkpoint.epoch_end(epoch)`` (default :class:`LastEpoch`); after the last epoch
    ``checkpoint.restore()`` puts the kept weights back. ``module``, when given, is in train
    mode during the loop (frozen backbones keep eval mode, see ``FeatureExtractor.train``) and
    back in eval mode afterwards, also when a step raises.
    """
    if epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {epochs}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    policy: CheckpointPolicy = LastEpoch() if checkpoint is None else checkpoint
    per_step = [s.scheduler for s in schedules if s.every == "step"]
    per_epoch = [s.scheduler for s in schedules if s.every == "epoch"]
    generator = torch.Generator().manual_seed(seed)
    history = TrainingHistory()
    bar = tqdm(range(epochs), desc=desc, disable=not progress, leave=False)
    with _train_mode(module):
        for epoch in bar:
            started = time.perf_counter()
            order = torch.randperm(n_items, generator=generator)
            total, count = 0.0, 0
            for start in range(0, n_items, batch_size):
                indices = order[start : start + batch_size]
                for optimizer in optimizers:
                    optimizer.zero_grad(set_to_none=True)
                loss = step(indices, generator)
                loss.backward()
                for optimizer in optimizers:
                    optimizer.step()
                for scheduler in per_step:
                    scheduler.step()
                total += float(loss.detach()) * len(indices)
                count += len(indices)
            mean = total / max(count, 1)
            history.epoch_losses.append(mean)
            for scheduler in per_epoch:
                scheduler.step()
            val_loss = policy.epoch_end(epoch)
            if val_loss is not None:
                history.val_losses.append(val_loss)
            bar.set_postfix(loss=f"{mean:.4f}")
            history.epoch_seconds.append(time.perf_counter() - started)
        history.best_epoch = policy.restore()
    return history


@contextmanager
def _train_mode(module: nn.Module | None) -> Iterator[None]:
    """``module`` in train mode inside the block, in eval mode after it (nothing for None)."""
    if module is None:
        yield
        return
    module.train()
    try:
        yield
    finally:
        module.eval()
