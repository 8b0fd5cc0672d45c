"""Perlin-noise masks for synthetic defects (DRAEM, Zavrtanik et al., ICCV 2021).

:func:`perlin_noise` is classic 2-D gradient noise; :func:`perlin_mask` thresholds it at a random
scale per axis, as DRAEM does, to get blob-shaped defect regions. All randomness comes from the
``torch.Generator`` passed in (no global RNG), and runs on that generator's device.
"""

from __future__ import annotations

import math

import torch

from flawmap.errors import ConfigError

__all__ = ["perlin_mask", "perlin_noise"]


def _check_positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def _check_generator(generator: torch.Generator) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise ConfigError(
            f"generator must be a torch.Generator (e.g. torch.Generator().manual_seed(0)), "
            f"got {type(generator).__name__}"
        )
    return generator


def _fade(t: torch.Tensor) -> torch.Tensor:
    """Perlin's quintic fade curve 6t^5 - 15t^4 + 10t^3."""
    return t * t * t * (t * (t * 6 - 15) + 10)


def _lattice_coords(size: int, res: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell index (size,) int64 and position inside the cell in [0, 1) (size,) float32.

    Pixel centres are mapped onto ``res`` cells spanning the axis exactly, which is the same as
    evaluating the noise on a grid padded to a multiple of ``res`` and cropping, for any size.
    """
    coord = (torch.arange(size, device=device, dtype=torch.float64) + 0.5) * (res / size)
    cell = coord.floor()
    return cell.long().clamp_(max=res - 1), (coord - cell).float()


def perlin_noise(
    height: int, width: int, res_y: int, res_x: int, generator: torch.Generator
) -> torch.Tensor:
    """Gradient (Perlin) noise of shape (H, W), float32, roughly in [-1, 1].

    ``res_y`` x ``res_x`` lattice cells span the image, with one random unit gradient per lattice
    corner; ``height`` and ``width`` need not be multiples of the resolutions. Values are scaled
    by sqrt(2) as in DRAEM's ``rand_perlin_2d``.
    """
    height = _check_positive_int("height", height)
    width = _check_positive_int("width", width)
    res_y = _check_positive_int("res_y", res_y)
    res_x = _check_positive_int("res_x", res_x)
    device = _check_generator(generator).device

    angles = 2 * math.pi * torch.rand(res_y + 1, res_x + 1, generator=generator, device=device)
    grad_y, grad_x = torch.sin(angles), torch.cos(angles)  # (res_y + 1, res_x + 1) each

    cy, ty = _lattice_coords(height, res_y, device)  # (H,)
    cx, tx = _lattice_coords(width, res_x, device)  # (W,)
    ty2, tx2 = ty[:, None], tx[None, :]

    def corner(dy: int, dx: int) -> torch.Tensor:
        """Dot product of the corner's gradient with the offset to it: (H, W)."""
        gy = grad_y[cy + dy][:, cx + dx]
        gx = grad_x[cy + dy][:, cx + dx]
        return gy * (ty2 - dy) + gx * (tx2 - dx)

    fy, fx = _fade(ty2), _fade(tx2)
    top = torch.lerp(corner(0, 0), corner(0, 1), fx)
    bottom = torch.lerp(corner(1, 0), corner(1, 1), fx)
    return (math.sqrt(2.0) * torch.lerp(top, bottom, fy)).float()


def _random_ellipse(height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """A non-empty random ellipse mask (H, W) bool, semi-axes 1/16 to 1/4 of each side."""
    device = generator.device
    u = torch.rand(4, generator=generator, device=device).tolist()
    cy = min(int(u[0] * height), height - 1) + 0.5
    cx = min(int(u[1] * width), width - 1) + 0.5
    ay = max(height * (1 / 16 + u[2] * 3 / 16), 1.0)
    ax = max(width * (1 / 16 + u[3] * 3 / 16), 1.0)
    ys = torch.arange(height, device=device, dtype=torch.float32)[:, None] + 0.5
    xs = torch.arange(width, device=device, dtype=torch.float32)[None, :] + 0.5
    # The centre pixel is always inside (distance 0), so the mask is never empty.
    return ((ys - cy) / ay) ** 2 + ((xs - cx) / ax) ** 2 <= 1.0


def perlin_mask(
    height: int,
    width: int,
    generator: torch.Generator,
    min_scale_exp: int = 0,
    max_scale_exp: int = 6,
    threshold: float = 0.5,
    max_tries: int = 20,
) -> torch.Tensor:
    """A non-empty binary defect region (H, W) bool from thresholded Perlin noise.

    As in DRAEM, the resolution of each axis is drawn independently as
    ``2 ** randint(min_scale_exp, max_scale_exp)`` (upper bound exclusive, so the defaults give
    1 to 32 cells) and the noise is thresholded with ``noise > threshold``. An empty result is
    redrawn up to ``max_tries`` times; after that a random ellipse is returned instead.
    """
    height = _check_positive_int("height", height)
    width = _check_positive_int("width", width)
    max_tries = _check_positive_int("max_tries", max_tries)
    _check_generator(generator)
    for name, value in (("min_scale_exp", min_scale_exp), ("max_scale_exp", max_scale_exp)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")
    if min_scale_exp >= max_scale_exp:
        raise ConfigError(
            f"min_scale_exp must be < max_scale_exp (the upper bound is exclusive), "
            f"got {min_scale_exp} and {max_scale_exp}"
        )
    if not math.isfinite(threshold):
        raise ConfigError(f"threshold must be a finite number, got {threshold!r}")

    for _ in range(max_tries):
        exps = torch.randint(
            min_scale_exp, max_scale_exp, (2,), generator=generator, device=generator.device
        ).tolist()
        noise = perlin_noise(height, width, 2 ** exps[0], 2 ** exps[1], generator)
        mask = noise > threshold
        if bool(mask.any()):
            return mask
    return _random_ellipse(height, width, generator)
