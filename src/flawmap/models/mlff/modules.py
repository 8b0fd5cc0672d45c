"""Building blocks of the multi-level feature fusion network (seed paper 004, §1).

- :func:`quantize_1d` / :func:`cooccurrence_2d`: STLNet's quantisation and counting operators
  (QCO, Zhu et al., CVPR 2021), 1-D (eq. 1-2) and 2-D;
- :class:`TEM`: texture enhancement module (1-D QCO, level MLP, self-attention over levels,
  features rebuilt per position through the encodings);
- :class:`PTFEM`: pyramid texture feature extraction module (2-D QCO in sub-regions at several
  scales, upsampled and fused);
- :class:`STLNet`: TEM then PTFEM over the fused shallow stages;
- :class:`SelfCalibratedConv`: self-calibrated convolution (Liu et al., CVPR 2020).

Quantisation (our exact reading of eq. 1-2, whose symbols were lost): the similarities S (K,)
of one image are min-max normalised to s in [0, 1]; the N levels are the bin centres
L_n = (2n - 1) / (2N), n = 1..N; the encoding is E(i, n) = 1 - |L_n - s_i| when
|L_n - s_i| < 0.5 / N and 0 otherwise, so every position lands in exactly one level (a value on
a bin boundary, s = 0 included, goes to the upper level, s = 1 to the top one) with an encoding
in [1 - 0.5/N, 1]. The level *values* handed to the MLPs are in similarity units,
min(S) + (max(S) - min(S)) L_n (STLNet's q_levels), so the MLPs see the similarity range.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from flawmap.errors import ConfigError

__all__ = [
    "PTFEM",
    "TEM",
    "STLNet",
    "SelfCalibratedConv",
    "conv_bn",
    "cooccurrence_2d",
    "count_levels",
    "level_centres",
    "quantize_1d",
    "quantize_levels",
]

_EPS = 1e-6


def conv_bn(c_in: int, c_out: int, kernel: int = 1, relu: bool = True) -> nn.Sequential:
    """Conv (no bias, 'same' padding) -> BatchNorm -> optional ReLU."""
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def level_centres(n_levels: int, device: torch.device | None = None) -> torch.Tensor:
    """(N,) float32 quantisation levels L_n = (2n - 1) / (2N), n = 1..N, in [0, 1]."""
    if n_levels < 2:
        raise ConfigError(f"the number of quantisation levels must be >= 2, got {n_levels}")
    return (2 * torch.arange(n_levels, device=device, dtype=torch.float32) + 1) / (2 * n_levels)


def quantize_levels(
    similarity: torch.Tensor, n_levels: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """1-D QCO quantisation (eq. 1) in sparse form: similarities (R, K) -> (level (R, K) int64,
    encoding (R, K), values (R, N)).

    Per row: s = (S - min S) / (max S - min S) (a constant row gives s = 0); ``level`` is the
    one level n with |L_n - s_i| < 0.5/N (boundaries to the upper level, s = 1 to level N),
    ``encoding`` = 1 - |L_level - s_i| (differentiable in s, not in the level choice);
    ``values`` are the levels in similarity units, min S + (max S - min S) L_n.
    """
    lo = similarity.amin(dim=-1, keepdim=True)
    span = similarity.amax(dim=-1, keepdim=True) - lo
    s = (similarity - lo) / span.clamp_min(_EPS)
    levels = level_centres(n_levels, similarity.device).to(similarity.dtype)
    index = (s.detach() * n_levels).floor().clamp(0, n_levels - 1).long()
    encoding = 1.0 - (levels[index] - s).abs()
    return index, encoding, lo + span * levels


def quantize_1d(similarity: torch.Tensor, n_levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """1-D QCO quantisation (eq. 1) of similarities (R, K) -> (E (R, K, N), values (R, N)).

    E(i, n) = 1 - |L_n - s_i| for the level of :func:`quantize_levels`, 0 for every other
    level (the dense form of the encodings).
    """
    index, encoding, values = quantize_levels(similarity, n_levels)
    dense = F.one_hot(index, n_levels).to(similarity.dtype) * encoding[..., None]
    return dense, values


def count_levels(encodings: torch.Tensor) -> torch.Tensor:
    """Counting (eq. 2): E (R, K, N) -> (R, N), sum_i E(i, n) / sum_{n, i} E(i, n)."""
    hist = encodings.sum(dim=-2)
    return hist / hist.sum(dim=-1, keepdim=True).clamp_min(_EPS)


def cooccurrence_2d(encodings: torch.Tensor) -> torch.Tensor:
    """2-D QCO counting: E (R, h, w, N) -> co-occurrence (R, N, N), each summing to 1.

    C(n, m) = sum over pairs of neighbouring positions (p, q) of E(p, n) E(q, m), over the
    horizontal pairs (p, right neighbour) and the vertical pairs (p, neighbour below),
    normalised by its total.
    """
    horizontal = torch.einsum("rhwn,rhwm->rnm", encodings[:, :, :-1], encodings[:, :, 1:])
    vertical = torch.einsum("rhwn,rhwm->rnm", encodings[:, :-1], encodings[:, 1:])
    counts = horizontal + vertical
    return counts / counts.sum(dim=(-2, -1), keepdim=True).clamp_min(_EPS)


def _cosine_to(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Cosine similarity along dim 1 of x (B, C, ...) to reference broadcastable to it."""
    return (F.normalize(x, dim=1) * F.normalize(reference, dim=1)).sum(dim=1)


class TEM(nn.Module):
    """Texture enhancement module (Fig. 2): (B, C, H, W) -> (B, C, H, W).

    x = conv-BN-LeakyReLU(input); S_i = cos(x_i, mean_i x_i) over the K = H W positions;
    E, L = :func:`quantize_levels` (S, N); the level statistics [L_n, count_n] (B, 2, N) go
    through an MLP (1-D 1x1 convolutions 2 -> C/2 -> C) and are joined with the global mean
    feature into D (B, C, N); self-attention over the N levels (keys, queries, values by 1x1
    convolutions, softmax(k^T q / sqrt(C))) rebuilds D'; each position's feature is then
    R_i = sum_n D'_n E(i, n) (the level features spread back through the encodings).
    """

    def __init__(self, channels: int, n_levels: int = 128) -> None:
        super().__init__()
        self.n_levels = n_levels
        level_centres(n_levels)  # validates
        self.pre = nn.Sequential(
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.LeakyReLU(inplace=True),
        )
        hidden = max(channels // 2, 1)
        self.level_mlp = nn.Sequential(
            nn.Conv1d(2, hidden, 1),
            nn.LeakyReLU(inplace=True),
            nn.Conv1d(hidden, channels, 1),
            nn.LeakyReLU(inplace=True),
        )
        self.join = nn.Sequential(nn.Conv1d(2 * channels, channels, 1), nn.LeakyReLU(inplace=True))
        self.key = nn.Conv1d(channels, channels, 1)
        self.query = nn.Conv1d(channels, channels, 1)
        self.value = nn.Conv1d(channels, channels, 1)
        self.out = nn.Conv1d(channels, channels, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.pre(features)
        b, c, h, w = x.shape
        mean = x.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1) global feature
        similarity = _cosine_to(x, mean).flatten(1)  # (B, K)
        # E (eq. 1) in sparse form: position i has encoding e_i at level l_i, 0 elsewhere
        level, encoding, values = quantize_levels(similarity, self.n_levels)  # (B, K) x2, (B, N)
        hist = torch.zeros_like(values).scatter_add(1, level, encoding)  # sum_i E(i, n)
        counts = hist / hist.sum(dim=1, keepdim=True).clamp_min(_EPS)  # eq. 2
        stats = torch.stack([values, counts], dim=1)  # (B, 2, N)
        d = self.join(
            torch.cat([self.level_mlp(stats), mean[..., 0].expand(b, c, self.n_levels)], dim=1)
        )  # (B, C, N)
        k, q, v = self.key(d), self.query(d), self.value(d)
        attention = torch.softmax(k.transpose(1, 2) @ q / math.sqrt(c), dim=-1)  # (B, N, N)
        rebuilt = self.out(v @ attention.transpose(1, 2))  # (B, C, N)
        # R = D' E^T: each position takes its level's feature, scaled by its encoding
        picked = rebuilt.gather(2, level[:, None, :].expand(b, c, h * w))  # (B, C, K)
        return (picked * encoding[:, None, :]).view(b, c, h, w)


class _PyramidBranch(nn.Module):
    """One PTFEM branch: (B, C, H, W) -> (B, C, s, s), one texture vector per sub-region.

    The map is cut into s x s sub-regions (bilinearly resized first so that every sub-region has
    at least 2 x 2 positions and the grid divides evenly); per sub-region, S_i = cos(x_i, the
    sub-region's mean), E = :func:`quantize_1d` (N levels), C = :func:`cooccurrence_2d`; the
    N^2 tokens [L_n, L_m, C(n, m)] go through an MLP (3 -> C/2, LeakyReLU, -> C), are
    averaged, joined with the sub-region's mean feature and projected back to C channels.
    """

    def __init__(self, channels: int, scale: int, n_levels: int) -> None:
        super().__init__()
        self.scale = scale
        self.n_levels = n_levels
        hidden = max(channels // 2, 1)
        self.token_mlp = nn.Sequential(nn.Conv2d(3, hidden, 1), nn.LeakyReLU(inplace=True))
        self.token_out = nn.Linear(hidden, channels)
        self.join = nn.Sequential(nn.Linear(2 * channels, channels), nn.LeakyReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        s, n = self.scale, self.n_levels
        rh, rw = max(2, math.ceil(h / s)), max(2, math.ceil(w / s))
        if (s * rh, s * rw) != (h, w):
            x = F.interpolate(x, size=(s * rh, s * rw), mode="bilinear", align_corners=False)
        regions = x.reshape(b, c, s, rh, s, rw).permute(0, 2, 4, 1, 3, 5)  # (B, s, s, C, rh, rw)
        regions = regions.reshape(b * s * s, c, rh, rw)
        mean = regions.mean(dim=(2, 3))  # (R, C)
        similarity = _cosine_to(regions, mean[..., None, None]).flatten(1)  # (R, rh rw)
        encodings, values = quantize_1d(similarity, n)
        cooc = cooccurrence_2d(encodings.view(-1, rh, rw, n))  # (R, N, N)
        tokens = torch.stack(
            [values[:, :, None].expand(-1, n, n), values[:, None, :].expand(-1, n, n), cooc],
            dim=1,
        )  # (R, 3, N, N)
        # MLP 3 -> C/2 -> C (STLNet's f1, f2), averaged over the N^2 tokens; its last layer is
        # linear, so it is applied after the average (same result, N^2 times cheaper).
        texture = self.token_out(self.token_mlp(tokens).mean(dim=(2, 3)))  # (R, C)
        out = self.join(torch.cat([texture, mean], dim=1))  # (R, C)
        return out.view(b, s, s, c).permute(0, 3, 1, 2)


class PTFEM(nn.Module):
    """Pyramid texture feature extraction module (Fig. 3): (B, C, H, W) -> (B, C, H, W).

    One :class:`_PyramidBranch` per scale (paper: 1, 2, 4, 8 sub-regions a side); each
    branch's (B, C, s, s) map is upsampled bilinearly to (H, W); the branches are concatenated
    and fused by a 1x1 conv-BN-ReLU.
    """

    def __init__(
        self, channels: int, scales: tuple[int, ...] = (1, 2, 4, 8), n_levels: int = 8
    ) -> None:
        super().__init__()
        bad = [s for s in scales if isinstance(s, bool) or not isinstance(s, int) or s < 1]
        if not scales or bad:
            raise ConfigError(f"ptfem_scales must be positive integers, got {scales!r}")
        level_centres(n_levels)  # validates
        self.branches = nn.ModuleList(_PyramidBranch(channels, s, n_levels) for s in scales)
        self.fuse = conv_bn(len(scales) * channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        outs = [
            F.interpolate(branch(x), size=size, mode="bilinear", align_corners=False)
            for branch in self.branches
        ]
        return self.fuse(torch.cat(outs, dim=1))


class STLNet(nn.Module):
    """Statistical texture branch (§1.1): shallow features (B, C, H, W) -> (B, C, H, W).

    t1 = TEM(x); t2 = PTFEM(conv(cat[x, t1])); out = conv(cat[x, t1, t2]) (1x1 conv-BN-ReLU
    each): the shallow features, first-level texture features and multi-scale texture
    features fused.
    """

    def __init__(
        self,
        channels: int,
        tem_levels: int = 128,
        ptfem_levels: int = 8,
        scales: tuple[int, ...] = (1, 2, 4, 8),
    ) -> None:
        super().__init__()
        self.tem = TEM(channels, tem_levels)
        self.pre_ptfem = conv_bn(2 * channels, channels)
        self.ptfem = PTFEM(channels, scales, ptfem_levels)
        self.fuse = conv_bn(3 * channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t1 = self.tem(x)
        t2 = self.ptfem(self.pre_ptfem(torch.cat([x, t1], dim=1)))
        return self.fuse(torch.cat([x, t1, t2], dim=1))


class SelfCalibratedConv(nn.Module):
    """Self-calibrated convolution (§1.2, Fig. 1): (B, C, H, W) -> (B, C, H, W).

    out = k4( k3(x) * sigmoid(x + up(k2(avgpool_r(x)))) ), each k a 3x3 conv-BN. The pooling
    rate r (SCNet: 4) is capped so that the pooled map keeps at least 2 x 2 cells (small
    inputs); ``up`` is bilinear back to (H, W).
    """

    def __init__(self, channels: int, pool: int = 4) -> None:
        super().__init__()
        if isinstance(pool, bool) or not isinstance(pool, int) or pool < 1:
            raise ConfigError(f"sc_pool must be an integer >= 1, got {pool!r}")
        self.pool = pool
        self.k2 = conv_bn(channels, channels, 3, relu=False)
        self.k3 = conv_bn(channels, channels, 3, relu=False)
        self.k4 = conv_bn(channels, channels, 3, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        r = max(1, min(self.pool, h // 2, w // 2))
        small = self.k2(F.avg_pool2d(x, r, ceil_mode=True))
        gate = torch.sigmoid(
            x + F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
        )
        return self.k4(self.k3(x) * gate)
