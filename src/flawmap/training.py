"""The one small training loop shared by every trained model (SimpleNet, FCDD, CSE, MLFF).

A model supplies a ``step(batch_index, generator) -> loss tensor`` closure over its own data;
the loop owns epochs, the seed, the progress bar and the loss history. It never sees test data:
checkpoint policies are "last epoch" or a criterion on training-only data (the model's choice).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from flawmap.errors import ConfigError


@dataclass
class TrainingHistory:
    """Mean training loss of every epoch, in order."""

    epoch_losses: list[float] = field(default_factory=list)


def run_epochs(
    step: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
    optimizers: list[torch.optim.Optimizer],
    n_items: int,
    batch_size: int,
    epochs: int,
    seed: int,
    progress: bool = False,
    desc: str = "train",
    on_epoch_end: Callable[[int, float], None] | None = None,
    module: nn.Module | None = None,
) -> TrainingHistory:
    """Run ``epochs`` passes over ``n_items`` items in seeded random batches.

    ``step(indices, generator)`` computes the loss of one batch (``indices`` (B,) int64 into the
    model's cached training data; ``generator`` seeds its noise); the loop backpropagates it and
    steps every optimiser. ``module``, when given, is in train mode during the loop (frozen
    backbones keep eval mode, see ``FeatureExtractor.train``) and back in eval mode afterwards,
    also when a step raises.
    """
    if epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {epochs}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    generator = torch.Generator().manual_seed(seed)
    history = TrainingHistory()
    bar = tqdm(range(epochs), desc=desc, disable=not progress, leave=False)
    with _train_mode(module):
        for epoch in bar:
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
                total += float(loss.detach()) * len(indices)
                count += len(indices)
            mean = total / max(count, 1)
            history.epoch_losses.append(mean)
            bar.set_postfix(loss=f"{mean:.4f}")
            if on_epoch_end is not None:
                on_epoch_end(epoch, mean)
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
