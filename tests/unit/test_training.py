"""Direct tests of the shared training loop (flawmap.training)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flawmap.errors import ConfigError
from flawmap.training import BestOnValidation, LastEpoch, Schedule, run_epochs


def _linear_problem(seed: int = 0) -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(10, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Linear(3, 1)
    return model, x, y


def _step(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    def step(indices: torch.Tensor, _generator: torch.Generator) -> torch.Tensor:
        return ((model(x[indices])[:, 0] - y[indices]) ** 2).mean()

    return step


def test_every_item_once_per_epoch_in_seeded_order() -> None:
    seen: list[list[int]] = []

    def run(seed: int) -> list[int]:
        seen.clear()
        weight = nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.SGD([weight], lr=0.1)

        def step(indices: torch.Tensor, _g: torch.Generator) -> torch.Tensor:
            seen.append(indices.tolist())
            return weight.sum() * 0 + float(len(indices))

        run_epochs(step, [optimizer], n_items=7, batch_size=3, epochs=2, seed=seed)
        return [i for batch in seen for i in batch]

    order = run(0)
    assert [len(b) for b in seen] == [3, 3, 1, 3, 3, 1]
    assert sorted(order[:7]) == list(range(7)) and sorted(order[7:]) == list(range(7))
    assert run(0) == order and run(1) != order


def test_history_losses_are_item_weighted_means_and_epochs_are_timed() -> None:
    weight = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=0.0)

    def step(indices: torch.Tensor, _g: torch.Generator) -> torch.Tensor:
        return weight.sum() + float(len(indices))  # loss = batch length

    history = run_epochs(step, [optimizer], n_items=5, batch_size=4, epochs=3, seed=0)
    assert history.epoch_losses == pytest.approx([(4 * 4 + 1 * 1) / 5] * 3)
    assert len(history.epoch_seconds) == 3 and all(s >= 0 for s in history.epoch_seconds)
    assert history.val_losses == [] and history.best_epoch == 2


def test_training_reduces_the_loss_and_is_reproducible() -> None:
    results = []
    for _ in range(2):
        model, x, y = _linear_problem()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        history = run_epochs(_step(model, x, y), [optimizer], 10, 4, epochs=20, seed=3)
        results.append((history.epoch_losses, model.weight.detach().clone()))
    (losses, weight), (losses2, weight2) = results
    assert losses[-1] < 0.1 * losses[0]
    assert losses == losses2 and torch.equal(weight, weight2)


def test_schedules_step_per_optimiser_step_or_per_epoch() -> None:
    model, x, y = _linear_problem()
    opt_a = torch.optim.SGD([model.weight], lr=1.0)
    opt_b = torch.optim.SGD([model.bias], lr=1.0)
    per_step = torch.optim.lr_scheduler.LambdaLR(opt_a, lambda k: 0.5**k)
    per_epoch = torch.optim.lr_scheduler.LambdaLR(opt_b, lambda k: 0.1**k)
    run_epochs(
        _step(model, x, y),
        [opt_a, opt_b],
        n_items=10,
        batch_size=4,
        epochs=2,
        seed=0,
        schedules=[Schedule(per_step, every="step"), Schedule(per_epoch, every="epoch")],
    )
    assert per_step.last_epoch == 6  # 3 steps per epoch
    assert per_epoch.last_epoch == 2
    assert opt_b.param_groups[0]["lr"] == pytest.approx(0.01)


def test_per_step_schedule_matches_stepping_before_every_step_but_the_first() -> None:
    """A per-step schedule gives the learning rates of the "step the scheduler before every
    optimiser step but the first" form (one-cycle schedules)."""

    def lrs(inside_step: bool) -> list[float]:
        model, x, y = _linear_problem()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=1e-2, total_steps=2 * 3, cycle_momentum=False
        )
        seen: list[float] = []
        calls = [0]
        loss_of = _step(model, x, y)

        def step(indices: torch.Tensor, g: torch.Generator) -> torch.Tensor:
            if inside_step and calls[0] > 0:
                scheduler.step()
            calls[0] += 1
            seen.append(optimizer.param_groups[0]["lr"])
            return loss_of(indices, g)

        schedules = [] if inside_step else [Schedule(scheduler, every="step")]
        run_epochs(step, [optimizer], 10, 4, epochs=2, seed=0, schedules=schedules)
        return seen + [float(p.detach().sum()) for p in model.parameters()]

    assert lrs(True) == lrs(False)


def test_schedule_every_must_be_step_or_epoch() -> None:
    model, _, _ = _linear_problem()
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        torch.optim.SGD(model.parameters(), lr=1.0), lambda k: 1.0
    )
    with pytest.raises(ConfigError, match="every"):
        Schedule(scheduler, every="batch")  # type: ignore[arg-type]


def test_best_on_validation_keeps_the_first_lowest_epoch() -> None:
    model, x, y = _linear_problem()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    criteria = iter([3.0, 1.0, 2.0, 1.0])
    states: list[torch.Tensor] = []
    modes: list[tuple[bool, bool]] = []

    def criterion() -> float:
        modes.append((model.training, torch.is_grad_enabled()))
        states.append(model.weight.detach().clone())
        return next(criteria)

    policy = BestOnValidation(model, criterion)
    history = run_epochs(
        _step(model, x, y), [optimizer], 10, 5, epochs=4, seed=0, checkpoint=policy, module=model
    )
    assert history.val_losses == [3.0, 1.0, 2.0, 1.0] and history.best_epoch == 1
    assert torch.equal(model.weight, states[1])  # epoch 1's weights restored
    assert not torch.equal(states[1], states[3])
    assert modes == [(False, False)] * 4  # eval mode, no gradients
    assert not model.training  # eval mode after the loop


def test_last_epoch_policy_and_train_mode_during_the_loop() -> None:
    model, x, y = _linear_problem()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    modes: list[bool] = []
    loss_of = _step(model, x, y)

    def step(indices: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        modes.append(model.training)
        return loss_of(indices, g)

    history = run_epochs(step, [optimizer], 10, 5, 2, 0, checkpoint=LastEpoch(), module=model)
    assert modes == [True] * 4 and not model.training and history.best_epoch == 1


def test_module_returns_to_eval_mode_when_a_step_raises() -> None:
    model, _, _ = _linear_problem()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)

    def step(indices: torch.Tensor, _g: torch.Generator) -> torch.Tensor:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run_epochs(step, [optimizer], 4, 2, 1, 0, module=model)
    assert not model.training


@pytest.mark.parametrize(("epochs", "batch_size", "match"), [(0, 2, "epochs"), (1, 0, "batch")])
def test_invalid_schedule_raises_config_error(epochs: int, batch_size: int, match: str) -> None:
    model, x, y = _linear_problem()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    with pytest.raises(ConfigError, match=match):
        run_epochs(_step(model, x, y), [optimizer], 10, batch_size, epochs, 0)
