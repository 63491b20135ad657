"""Long videos: consecutive segments with a prompt each, produced one segment at a time.

Segment 1 is any request (t2v, i2v, extend). Every later segment is an extend step whose
conditioning window is the last frames of the video so far (re-encoded and forced, pipeline spec
§5.5; with the `interact` preset the previous latent window conditions the InfinityStar-Interact
recipe instead, §5.6); only its new frames are yielded, so writing the yielded frames in order
gives one video and memory holds one segment plus one window.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Optional

import torch

from engine.generate.conditioning import ConditioningError, Reference, continuation_window
from engine.request import Event, EventCallback, GenerationRequest, Result


SEED_MODULUS = 2**32


def segment_seed(seed: int, k: int) -> int:
    """Seed of segment k (0-based): seed + k, so segments differ but one seed fixes the story."""
    return (seed + k) % SEED_MODULUS


def story_requests(first: GenerationRequest, prompts: Sequence[str]) -> list[GenerationRequest]:
    """`first`, then one continuation per prompt; segment k samples with `segment_seed(seed, k)` (and an
    explicit encode seed steps the same way)."""
    encode = first.encode_seed
    rest = [
        replace(first, mode="extend", prompt=prompt, seed=segment_seed(first.seed, k), seconds=None, image=None,
                video=None, aspect=None, from_start=False, only_new=True,
                encode_seed=None if encode is None else segment_seed(encode, k))
        for k, prompt in enumerate(prompts, start=1)
    ]
    return [first, *rest]


def run_story(pipeline, requests: Sequence[GenerationRequest],
              on_event: Optional[EventCallback] = None) -> Iterator[Result]:
    """Yield one Result per request; segment k > 0 continues the frames so far (mode extend)."""
    emit = on_event or (lambda event: None)
    window = continuation_window(pipeline.preset)[0]
    tail: Optional[torch.Tensor] = None
    carry = None
    for k, request in enumerate(requests):
        emit(Event("segment", k + 1, len(requests), message=request.prompt))
        reference = None
        if k:
            if request.mode != "extend":
                raise ConditioningError(f"story segment {k + 1} must be an extend request, not {request.mode}.")
            reference = Reference(tail, {"segment": k + 1, "continues": "the previous segments"}, carry)
        result = pipeline.run(request, on_event, reference=reference)
        result.metadata["segment"] = k + 1
        decoded = result.decoded if result.decoded is not None else result.frames
        tail = decoded[-window:] if tail is None or len(decoded) >= window else torch.cat([tail, decoded])[-window:]
        carry = result.carry
        yield result
