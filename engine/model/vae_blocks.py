"""Building blocks of the InfinityStar video VAE (causal 3D convs, RMS/spatial norms, DC samplers).

Attribute names mirror the official state-dict keys (spec/vae.md §2), so the official weights load
with `load_state_dict(strict=True)`. Everything is inference-only: several ops work in place on
tensors this module created itself, to keep the peak memory of a decoder chunk low.

Temporal causality: every 3x3x3 conv looks at the current frame and the two before it. Across
temporal chunks those two frames come from a `ConvCache`, a plain dict that maps each conv module to
the last frames of its (temporally padded) input; `None` means "no carry-over" (one-shot pass).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ConvCache = dict  # CausalConv3d -> Tensor [B, C, kt-1, H, W]
CONV_SLICE_ELEMENTS = 2**24  # input elements per conv call for big inputs (64 MiB in fp32)
_ONEDNN_DTYPES = (torch.float32, torch.bfloat16)


def _onednn_on() -> bool:
    return torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled


class CausalConv3d(nn.Module):
    """Conv3d, stride 1, zero padding in space, causal in time.

    Without cached frames the first input frame is replicated kt-1 times in front (the official
    rule); with a cache the previous chunk's last kt-1 input frames are prepended instead.
    Big inputs are convolved in temporal slices of about `CONV_SLICE_ELEMENTS` input elements, so
    no padded copy of the whole input and no whole-size conv temporaries are ever made.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.time_pad = kernel_size - 1
        # Spatial zero padding is done by the conv itself (no padded copy of the input).
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size,
                              padding=(0, kernel_size // 2, kernel_size // 2))

    def slices(self, x: Tensor, cache: ConvCache | None = None) -> Iterator[tuple[int, Tensor]]:
        """Yield (first output frame, output frames) over consecutive temporal slices."""
        k, frames = self.time_pad, x.shape[2]
        past = None
        if k:
            past = cache.get(self) if cache is not None else None
            if past is None:
                past = x[:, :, :1].expand(-1, -1, k, -1, -1)
            if cache is not None:
                tail = x[:, :, -k:] if frames >= k else torch.cat([past, x], dim=2)[:, :, -k:]
                cache[self] = tail.clone()  # clone: a view would keep the whole input alive
        step = max(1, CONV_SLICE_ELEMENTS // max(1, x[:, :, 0].numel()) - k)
        for start in range(0, frames, step):
            end = min(frames, start + step)
            if start >= k:  # output frame j reads padded frames j..j+k = input frames j-k..j
                src = x[:, :, start - k:end]
            else:
                src = torch.cat([past[:, :, start:], x[:, :, :end]], dim=2)
            yield start, self._conv(src)

    def _conv(self, x: Tensor) -> Tensor:
        """The conv, on oneDNN whenever it runs on the CPU without autograd.

        PyTorch sends a CPU conv3d to oneDNN only above a size threshold (N·C·T·H > 20480); below
        it, a slow im2col path that is 4-6x slower for the decoder's 32- and 64-channel convs and
        makes a big unfolded temporary. Same numbers up to float rounding order.
        """
        conv = self.conv
        if x.device.type != "cpu" or not inplace_ok() or x.dtype not in _ONEDNN_DTYPES or not _onednn_on():
            return conv(x)
        if self.time_pad == 0:  # 1x1x1 (the spatial norms' conv_y/conv_b): a plain matmul is cheaper
            b, c = x.shape[:2]
            y = torch.matmul(conv.weight.view(conv.out_channels, c), x.reshape(b, c, -1))
            y = y if conv.bias is None else y.add_(conv.bias[:, None])
            return y.view(b, -1, *x.shape[2:])
        return torch.ops.aten.mkldnn_convolution(x.contiguous(), conv.weight, conv.bias, conv.padding,
                                                 conv.stride, conv.dilation, conv.groups)

    def forward(self, x: Tensor, cache: ConvCache | None = None) -> Tensor:
        out = None
        for start, y in self.slices(x, cache):
            if start == 0 and y.shape[2] == x.shape[2]:
                return y
            if out is None:
                out = y.new_empty(*y.shape[:2], x.shape[2], *y.shape[3:])
            out[:, :, start:start + y.shape[2]] = y
        return out


def inplace_ok() -> bool:
    """In-place tricks save inference memory but break autograd: training runs out of place."""
    return not torch.is_grad_enabled()


class RMSNorm(nn.Module):
    """L2-normalise over channels (clamp 1e-12), times sqrt(C) and a per-channel gain; no eps, no bias."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels, 1, 1, 1))
        self.scale = channels ** 0.5

    def forward(self, x: Tensor, inplace: bool = False) -> Tensor:
        if not inplace_ok():
            return x / torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(1e-12) * (self.gamma * self.scale)
        denom = channel_norm(x).clamp_min_(1e-12)
        out = x.div_(denom) if inplace and x.is_contiguous() else x / denom
        return out.mul_(self.gamma * self.scale)


def channel_norm(x: Tensor) -> Tensor:
    """L2 norm over dim 1 (keepdim) for inference.

    On the CPU `linalg.vector_norm` over the strided channel dim is 10-30x slower than one
    multiply-add per channel into a one-channel fp32 accumulator (the same sum up to rounding
    order). Elsewhere one reduction kernel beats a kernel launch per channel.
    """
    if x.device.type != "cpu":
        return torch.linalg.vector_norm(x, dim=1, keepdim=True)
    acc = x[:, 0].float().square()
    for c in range(1, x.shape[1]):
        acc.addcmul_(x[:, c], x[:, c])
    return acc.sqrt_().unsqueeze(1).to(x.dtype)


def nearest_frame_index(frames_out: int, frames_in: int, device: torch.device) -> Tensor:
    """Source frame per output frame of the decoder's spatial-norm resize ('nearest').

    For an odd output count > 1 the first latent frame maps only to the first output frame and the
    rest are resized separately (official first-frame rule). Ratios are always integers here, so
    integer floor division equals PyTorch's nearest rule exactly.
    """
    if frames_out > 1 and frames_out % 2 == 1:
        rest = [1 + j * (frames_in - 1) // (frames_out - 1) for j in range(frames_out - 1)]
        index = [0] + rest
    else:
        index = [j * frames_in // frames_out for j in range(frames_out)]
    return torch.tensor(index, device=device)


class SpatialNorm(nn.Module):
    """Decoder norm conditioned on the 16-channel latent chunk `zq`: RMS(f)·conv_y(zq↑) + conv_b(zq↑).

    conv_y/conv_b are 1x1x1, so they commute with the nearest upsampling of zq: we apply them at
    the latent resolution and broadcast over the integer spatial factor instead of materialising
    two full-resolution tensors.
    """

    def __init__(self, channels: int, zq_channels: int) -> None:
        super().__init__()
        self.norm_layer = RMSNorm(channels)
        self.conv_y = CausalConv3d(zq_channels, channels, 1)
        self.conv_b = CausalConv3d(zq_channels, channels, 1)

    def forward(self, f: Tensor, zq: Tensor, inplace: bool = False) -> Tensor:
        b, c, t, h, w = f.shape
        zh, zw = zq.shape[-2:]
        if h % zh or w % zw:
            raise ValueError(f"feature size {(h, w)} is not a multiple of the latent size {(zh, zw)}")
        zq = zq.index_select(2, nearest_frame_index(t, zq.shape[2], zq.device))
        gain = self.conv_y(zq)[:, :, :, :, None, :, None]
        shift = self.conv_b(zq)[:, :, :, :, None, :, None]
        out = self.norm_layer(f, inplace=inplace).contiguous()
        if not inplace_ok():
            return (out.view(b, c, t, zh, h // zh, zw, w // zw) * gain + shift).view(b, c, t, h, w)
        out.view(b, c, t, zh, h // zh, zw, w // zw).mul_(gain).add_(shift)
        return out


class ResnetBlock(nn.Module):
    """norm → SiLU → conv, twice, plus identity shortcut. Spatial norms when `zq_channels` is set."""

    def __init__(self, channels: int, zq_channels: int | None = None) -> None:
        super().__init__()
        if zq_channels is None:
            self.norm1, self.norm2 = RMSNorm(channels), RMSNorm(channels)
        else:
            self.norm1 = SpatialNorm(channels, zq_channels)
            self.norm2 = SpatialNorm(channels, zq_channels)
        self.conv1 = CausalConv3d(channels, channels, 3)
        self.conv2 = CausalConv3d(channels, channels, 3)

    def _norm(self, norm: nn.Module, x: Tensor, zq: Tensor | None, inplace: bool) -> Tensor:
        return norm(x, inplace=inplace) if zq is None else norm(x, zq, inplace=inplace)

    def forward(self, x: Tensor, cache: ConvCache | None, zq: Tensor | None = None) -> Tensor:
        h = self._norm(self.norm1, x, zq, inplace=False)  # x is still needed for the shortcut
        h = self.conv1(F.silu(h, inplace=inplace_ok()), cache)
        h = self._norm(self.norm2, h, zq, inplace=True)
        h = self.conv2(F.silu(h, inplace=inplace_ok()), cache)
        return h.add_(x) if inplace_ok() else h + x


def _pool_time(x: Tensor, factor: int) -> Tensor:
    """Average groups of `factor` frames; with an odd frame count frame 0 is kept alone (causal)."""
    frames = x.shape[2]
    if factor == 1 or frames == 1:
        return x
    first, rest = (x[:, :, :1], x[:, :, 1:]) if frames % 2 else (None, x)
    rest = rest.unflatten(2, (-1, factor)).mean(3)
    return rest if first is None else torch.cat([first, rest], dim=2)


def _space_to_depth(x: Tensor) -> Tensor:
    """[B,C,T,2h,2w] -> [B,4C,T,h,w], channel index (2·ph + pw)·C + c."""
    b, c, t, h, w = x.shape
    x = x.view(b, c, t, h // 2, 2, w // 2, 2).permute(0, 4, 6, 1, 2, 3, 5)
    return x.reshape(b, 4 * c, t, h // 2, w // 2)


class DCDownBlock(nn.Module):
    """Encoder sampler: conv to C_out/4 channels then 2x2 space-to-depth (+ causal time pooling),
    plus a parameter-free shortcut (the same fold of the input, channel groups averaged)."""

    def __init__(self, in_channels: int, out_channels: int, time_factor: int) -> None:
        super().__init__()
        if out_channels % 4 or (4 * in_channels) % out_channels:
            raise ValueError(f"DC down block {in_channels}->{out_channels} is not a valid fold")
        self.norm = RMSNorm(in_channels)
        self.conv = CausalConv3d(in_channels, out_channels // 4, 3)
        self.time_factor = time_factor
        self.out_channels = out_channels

    def forward(self, x: Tensor, cache: ConvCache | None) -> Tensor:
        a = self.conv(F.silu(self.norm(x), inplace=inplace_ok()), cache)
        a = _space_to_depth(_pool_time(a, self.time_factor))
        s = _space_to_depth(_pool_time(x, self.time_factor))
        s = s.unflatten(1, (-1, self.out_channels)).mean(1)
        return a.add_(s) if inplace_ok() else a + s


class DCUpBlock(nn.Module):
    """Decoder sampler: conv to C_out·4·tf channels then depth-to-space over (time, 2, 2), plus a
    parameter-free shortcut (input tiled along channels, same depth-to-space)."""

    def __init__(self, in_channels: int, out_channels: int, time_factor: int) -> None:
        super().__init__()
        conv_channels = out_channels * 4 * time_factor
        if conv_channels % in_channels:
            raise ValueError(f"DC up block {in_channels}->{out_channels} is not a valid unfold")
        self.norm = RMSNorm(in_channels)
        self.conv = CausalConv3d(in_channels, conv_channels, 3)
        self.time_factor = time_factor
        self.out_channels = out_channels

    def forward(self, x: Tensor, cache: ConvCache | None, split_first: bool = False) -> Tensor:
        b, c, t, h, w = x.shape
        tf, co = self.time_factor, self.out_channels
        out = x.new_empty(b, co, t * tf, 2 * h, 2 * w)
        # Conv and unfold slice by slice: the conv output (as big as `out`) never exists whole.
        for start, a in self.conv.slices(F.silu(self.norm(x), inplace=inplace_ok()), cache):
            ts = a.shape[2]
            # Shortcut: conv channel k gets input channel k mod C_in (whole-block tiling); adding
            # it before the (linear) unfold and first-frame mean is the same sum, no tiled copy.
            if inplace_ok():
                a.view(b, -1, c, ts, h, w).add_(x[:, :, start:start + ts].unsqueeze(1))
            else:
                a = a.view(b, -1, c, ts, h, w) + x[:, :, start:start + ts].unsqueeze(1)
            a = a.view(b, tf, 2, 2, co, ts, h, w).permute(0, 4, 5, 1, 6, 2, 7, 3)
            out[:, :, start * tf:(start + ts) * tf].view(b, co, ts, tf, h, 2, w, 2).copy_(a)
        if tf > 1 and (t % 2 == 1 or split_first):
            # Causal first frame: the tf frames unfolded from latent frame 0 collapse to their mean.
            out[:, :, tf - 1] = out[:, :, :tf].mean(2)
            out = out[:, :, tf - 1:]
        return out


class SamplerSlot(nn.Module):
    """Holds a DC sampler under the name `conv` (official key `…samplers.0.conv.…`)."""

    def __init__(self, sampler: nn.Module) -> None:
        super().__init__()
        self.conv = sampler


class DownBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, layers: int,
                 time_factor: int, has_sampler: bool) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(ResnetBlock(in_channels) for _ in range(layers))
        if has_sampler:
            sampler = DCDownBlock(in_channels, out_channels, time_factor)
            self.downsamplers = nn.ModuleList([SamplerSlot(sampler)])
        elif in_channels != out_channels:
            raise ValueError("an encoder block without sampler cannot change the width")
        else:
            self.downsamplers = None

    def forward(self, x: Tensor, cache: ConvCache | None) -> Tensor:
        for resnet in self.resnets:
            x = resnet(x, cache)
        if self.downsamplers is not None:
            x = self.downsamplers[0].conv(x, cache)
        return x


class UpBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, layers: int, zq_channels: int,
                 time_factor: int, has_sampler: bool) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(ResnetBlock(in_channels, zq_channels) for _ in range(layers))
        if has_sampler:
            sampler = DCUpBlock(in_channels, out_channels, time_factor)
            self.upsamplers = nn.ModuleList([SamplerSlot(sampler)])
        elif in_channels != out_channels:
            raise ValueError("a decoder block without sampler cannot change the width")
        else:
            self.upsamplers = None

    def forward(self, x: Tensor, cache: ConvCache | None, zq: Tensor, split_first: bool) -> Tensor:
        for resnet in self.resnets:
            x = resnet(x, cache, zq)
        if self.upsamplers is not None:
            x = self.upsamplers[0].conv(x, cache, split_first)
        return x


class MidBlock(nn.Module):
    def __init__(self, channels: int, zq_channels: int | None = None) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(ResnetBlock(channels, zq_channels) for _ in range(2))

    def forward(self, x: Tensor, cache: ConvCache | None, zq: Tensor | None = None) -> Tensor:
        for resnet in self.resnets:
            x = resnet(x, cache, zq)
        return x
