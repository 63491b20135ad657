"""Prompt decoration and the T5 text encoder (spec/pipeline.md §2.1-2.2)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import torch

from engine.presets import PromptDecoration

TINY_MAX_LENGTH = 64
FLAN_T5_MAX_LENGTH = 512


def decorate_prompt(prompt: str, *, seconds: Optional[int], suffix: str = "", tag: bool = True) -> str:
    """Text the model was trained on: `<<<t={seconds}s>>>` + prompt + suffix.

    `seconds=None` means an image: images were trained without the duration tag.
    """
    prefix = "" if seconds is None or not tag else f"<<<t={int(seconds)}s>>>"
    return f"{prefix}{prompt}{suffix}"


def _dtype_kwarg(dtype: torch.dtype) -> dict:
    """transformers renamed `torch_dtype` to `dtype` in 4.56; accept both generations."""
    import transformers
    from packaging.version import Version

    key = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
    return {key: dtype}


def prompt_text(prompt: str, *, decoration: PromptDecoration, seconds: Optional[int],
                decorate: bool = True) -> str:
    """The text a request hands to T5: decorated as `decoration` says (the preset's field; videos
    get the duration tag, images none), or the prompt unchanged when decoration is switched off."""
    if not decorate:
        return prompt
    return decorate_prompt(prompt, seconds=seconds, suffix=decoration.suffix, tag=decoration.duration_tag)


class TextEncoder:
    """A T5 tokenizer + encoder returning one fp32 feature matrix [L, C] per prompt.

    L counts the real tokens including the closing `</s>`; padding is dropped, as the official
    variable-length packing does.
    """

    def __init__(self, tokenizer, model: torch.nn.Module, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.model = model.eval().requires_grad_(False)
        self.max_length = max_length

    @property
    def channels(self) -> int:
        return self.model.config.d_model

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        dtype: Optional[torch.dtype] = None,
    ) -> "TextEncoder":
        """Load a Flan-T5 folder (tokenizer + encoder weights), e.g. `text_encoder/flan-t5-xl-official`.

        dtype defaults to bfloat16 on CUDA (the official run computes T5 under bf16 autocast) and
        float32 elsewhere.
        """
        from transformers import AutoTokenizer, T5EncoderModel

        device = torch.device(device)
        if dtype is None:
            dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        tokenizer = AutoTokenizer.from_pretrained(str(path), legacy=True)
        model = T5EncoderModel.from_pretrained(str(path), **_dtype_kwarg(dtype)).to(device)
        return cls(tokenizer, model, FLAN_T5_MAX_LENGTH)

    @classmethod
    def tiny(
        cls,
        seed: int = 0,
        weights: Optional[str | Path] = None,
        device: str | torch.device = "cpu",
    ) -> "TextEncoder":
        """A 2-layer T5 on UTF-8 bytes (no files needed), d_model 48 like the tiny transformer's text.

        Weights are a fixed-seed random init, or `weights` (a safetensors file written with
        `safetensors.torch.save_model`) when trained tiny weights exist.
        """
        from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

        # extra_ids=0: ids are bytes + 3 only, so every id fits the 259-row embedding.
        tokenizer = ByT5Tokenizer(extra_ids=0)
        config = T5Config(
            vocab_size=len(tokenizer), d_model=48, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
            feed_forward_proj="gated-gelu",
        )
        with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's RNG
            torch.manual_seed(seed)
            model = T5EncoderModel(config)
        if weights is not None:
            from safetensors.torch import load_model

            load_model(model, str(weights), strict=True)
        return cls(tokenizer, model.to(device), TINY_MAX_LENGTH)

    def tokenize(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask), both [B, max_length]; over-long prompts are truncated
        but keep their `</s>`."""
        batch = self.tokenizer(
            list(prompts), max_length=self.max_length, padding="max_length", truncation=True,
            return_tensors="pt",
        )
        return batch["input_ids"], batch["attention_mask"]

    def count_tokens(self, prompt: str) -> int:
        """Tokens of `prompt` before truncation, its closing `</s>` included."""
        return len(self.tokenizer(prompt, truncation=False, verbose=False)["input_ids"])

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> list[torch.Tensor]:
        """One float32 tensor [L_i, C] per prompt, L_i = real tokens including `</s>`.

        The encoder runs over the longest prompt's tokens only, not all `max_length` padded
        positions (the official code encodes the padding too; Flan-T5-XL then does about 12x the
        work for a 40-token prompt). Padding is on the right and masked out of every attention,
        so the real tokens' features are the same (tests/test_text.py checks it).
        """
        ids, mask = self.tokenize(prompts)
        longest = max(1, int(mask.sum(-1).max()))
        ids, mask = ids[:, :longest], mask[:, :longest]
        device = self.device
        hidden = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
        hidden = hidden.float()
        return [hidden[i, : int(n)] for i, n in enumerate(mask.sum(-1))]
