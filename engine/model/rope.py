"""4-axis RoPE (scale, frame, height, width), computed per scale on the fly.

Each axis owns head_dim/8 frequency slots; slot j of the concatenated [scale|frame|h|w] vector
rotates the adjacent pair (2j, 2j+1) of every head. Angles are fp32 position x fp32 inverse
frequency, exactly like the reference tables, so no giant table is ever built.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from engine.model.schedule import Schedule


def inv_freq(head_dim: int, base: float = 10000.0) -> torch.Tensor:
    """[F] inverse frequencies, F = head_dim / 8 (exponent i/F, not 2i/dh)."""
    f = head_dim // 8
    return 1.0 / (base ** (torch.arange(f, dtype=torch.float32) / f))


def _angles(positions: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    return torch.outer(positions.to(torch.float32), freqs)


def spread_positions(n: int, largest: int) -> torch.Tensor:
    """Grid indices of an n-cell axis spread over the largest grid (fp32, round half to even)."""
    return (torch.arange(n, dtype=torch.float32) * torch.tensor(largest / n, dtype=torch.float32)).round()


def grid_rope(
    shape: tuple[int, int, int],
    frames: Sequence[int],
    row: int,
    largest_hw: tuple[int, int],
    head_dim: int,
    text_maxlen: int = 512,
    base: float = 10000.0,
) -> torch.Tensor:
    """[2, t*h*w, head_dim/2] (cos, sin) for a (t, h, w) token grid.

    Scale axis: text_maxlen + row for every token; frame axis: `frames` (one per t); height/width:
    the grid spread over `largest_hw`. Tokens are t-major, then h, then w.
    """
    t, h, w = shape
    if len(frames) != t:
        raise ValueError(f"{len(frames)} frame positions for {t} frames")
    freqs = inv_freq(head_dim, base)
    f = freqs.numel()
    scale = _angles(torch.tensor([text_maxlen + row]), freqs)  # [1, F]
    frame = _angles(torch.tensor(list(frames)), freqs)  # [t, F]
    height = _angles(spread_positions(h, largest_hw[0]), freqs)
    width = _angles(spread_positions(w, largest_hw[1]), freqs)
    ang = torch.cat(
        [
            scale.view(1, 1, 1, f).expand(t, h, w, f),
            frame.view(t, 1, 1, f).expand(t, h, w, f),
            height.view(1, h, 1, f).expand(t, h, w, f),
            width.view(1, 1, w, f).expand(t, h, w, f),
        ],
        dim=-1,
    ).reshape(t * h * w, 4 * f)
    return torch.stack([ang.cos(), ang.sin()])


def visual_rope(
    schedule: Schedule, si: int, rep: int, head_dim: int, text_maxlen: int = 512, base: float = 10000.0
) -> torch.Tensor:
    """RoPE of repetition `rep` of scale `si`: its step row, its clip's absolute latent frames."""
    info = schedule.infos[si]
    frames = range(info.frame_ss, info.frame_ss + info.shape[0])
    return grid_rope(info.shape, frames, info.rope_rows[rep], schedule.largest[1:], head_dim, text_maxlen, base)


def text_rope(length: int, head_dim: int, base: float = 10000.0) -> torch.Tensor:
    """[2, length, head_dim/2]: text token j sits at scale position j, frame = h = w = 0."""
    freqs = inv_freq(head_dim, base)
    ang = torch.zeros(length, 4 * freqs.numel())
    ang[:, : freqs.numel()] = _angles(torch.arange(length), freqs)
    return torch.stack([ang.cos(), ang.sin()])


def apply_rope(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs of x [..., L, dh] by rope [2, L, dh/2]; math in fp32, result in x.dtype."""
    if torch.compiler.is_compiling():  # inductor fuses the real form (it has no complex kernels)
        cos, sin = rope[0], rope[1]
        pairs = x.float().unflatten(-1, (-1, 2))
        a, b = pairs[..., 0], pairs[..., 1]
        return torch.stack([a * cos - b * sin, b * cos + a * sin], dim=-1).flatten(-2).to(x.dtype)
    # As complex numbers the rotation is one multiply, (a + ib)(cos + i sin), computed with the
    # same products and sums as the real form (a cos - b sin, b cos + a sin) but without its five
    # temporaries: about 10x faster on CPUs, same bits.
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))
    out = torch.view_as_real(pairs * torch.complex(rope[0], rope[1]))
    return out.flatten(-2).to(x.dtype)
