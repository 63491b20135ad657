"""Weight-only 8-bit storage for the transformer blocks' linear layers (int8 or fp8 e4m3).

Each output channel (row of the weight) gets one scale: int8 maps the row's absolute maximum to
127, fp8 maps it to 448 (the largest finite float8_e4m3fn). Matmuls run in the activation dtype
(bf16 on CUDA, fp32 on CPU): every int8 value and every fp8 value is exact in bf16, so the only
error is the rounding at storage time. Except int8 on a CPU: there the activations are quantized
per row too and the product is a real int8 GEMM (faster than fp32; see QuantLinear._int8_gemm). The row scale is applied to the matmul's output, which is
cheaper than scaling the weight (tokens x out instead of out x in for the big scales).

Conversion happens block by block from the float weights as loaded (memory-mapped on the CPU), so
no full float copy of the model is ever made on the GPU.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import InfinistarError, check_choice

from engine.choices import WEIGHT_MODES  # "bf16" = the float path (fp32 on CPU)
_LEVELS = {"int8": 127.0, "fp8": 448.0}


class WeightModeError(InfinistarError):
    """An unknown --weights mode."""


def check_mode(mode: str) -> str:
    return check_choice(mode, WEIGHT_MODES, WeightModeError, "weights mode")


def quantize_weight(weight: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Float [out, in] -> (stored [out, in], fp32 scale [out]).

    int8 is stored as int8; fp8 as the raw e4m3fn bytes in a uint8 tensor, so `Module.to(dtype)`
    (which converts floating tensors, float8 included) can never touch it.
    """
    w = weight.float()
    levels = _LEVELS[mode]
    absmax = w.abs().amax(dim=1)
    scale = torch.where(absmax > 0, absmax / levels, torch.ones_like(absmax))
    scaled = w / scale[:, None]
    if mode == "int8":
        stored = scaled.round_().clamp_(-127, 127).to(torch.int8)
    else:
        stored = scaled.clamp_(-levels, levels).to(torch.float8_e4m3fn).view(torch.uint8)
    return stored, scale


class QuantLinear(nn.Module):
    """A bias-optional Linear whose weight is stored in 8 bits with a per-output-channel scale.

    Buffers: `qweight` [out, in] (int8, or uint8 holding fp8 bytes), `scale` [out] fp32,
    and `bias` (a float Parameter) when the layer has one.
    """

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.out_features, self.in_features = qweight.shape
        self.register_buffer("qweight", qweight)
        self.register_buffer("scale", scale.float())
        self.bias = nn.Parameter(bias, requires_grad=False) if bias is not None else None

    @classmethod
    def from_linear(cls, linear: nn.Linear, mode: str, device: torch.device | str | None = None) -> "QuantLinear":
        """Quantize `linear` (its weight may be memory-mapped on the CPU) onto `device`."""
        device = torch.device(device) if device is not None else linear.weight.device
        qweight, scale = quantize_weight(linear.weight.to(device), mode)
        bias = linear.bias.detach().to(device) if linear.bias is not None else None
        return cls(qweight, scale, bias, mode)

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        """The weight as `dtype` without its scale (exact: 8-bit values fit bf16)."""
        q = self.qweight if self.mode == "int8" else self.qweight.view(torch.float8_e4m3fn)
        return q.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "int8" and x.device.type == "cpu":
            return self._int8_gemm(x)
        dtype = torch.get_autocast_dtype("cuda") if x.is_cuda and torch.is_autocast_enabled("cuda") else x.dtype
        y = F.linear(x.to(dtype), self.dequantized(dtype)) * self.scale.to(dtype)
        return y + self.bias.to(dtype) if self.bias is not None else y

    def _int8_gemm(self, x: torch.Tensor) -> torch.Tensor:
        """CPU: a real int8 x int8 -> int32 GEMM (torch._int_mm, oneDNN VNNI), the activations
        quantized per row on the fly (absmax -> 127): 3-4x faster than the fp32 matmul of a
        dequantized weight, at about 1.4x the weight-only error (README, "int8 on a CPU")."""
        rows = x.reshape(-1, self.in_features).float()
        step = rows.abs().amax(dim=1, keepdim=True).clamp_min_(1e-30).div_(127.0)
        quantized = torch.div(rows, step).round_().to(torch.int8)
        y = torch._int_mm(quantized, self.qweight.t()).float().mul_(step).mul_(self.scale)
        if self.bias is not None:
            y = y.add_(self.bias.float())
        return y.to(x.dtype).view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, mode={self.mode}"


def quantize_block(block: nn.Module, mode: str, device: torch.device | str) -> None:
    """Replace every nn.Linear inside `block` by a QuantLinear on `device`."""
    for parent in list(block.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, QuantLinear.from_linear(child, mode, device))


def quantize_transformer(model: nn.Module, mode: str, device: torch.device | str,
                         dtype: torch.dtype) -> nn.Module:
    """Convert an InfinityTransformer's blocks in place, one block at a time: linears to
    QuantLinear on `device`, the blocks' other tensors (norms) to `dtype` on `device`. The rest
    of the model (embeddings, heads) is left where and as it is."""
    check_mode(mode)
    if mode == "bf16":
        raise WeightModeError("bf16 is the float path; nothing to quantize.")
    for block in model.layers():
        quantize_block(block, mode, device)
        for module in block.modules():
            if isinstance(module, QuantLinear):
                continue
            for name, param in list(module.named_parameters(recurse=False)):
                module._parameters[name] = nn.Parameter(param.detach().to(device, dtype), requires_grad=False)
    return model
