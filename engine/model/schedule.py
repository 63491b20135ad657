"""Dynamic-resolution tables, scale schedules, clip structure and attention context.

`build_schedule` turns a preset (or a bare ScheduleConfig) plus a frame count into one frozen
`Schedule` that the quantizer and the sampler consume; nothing downstream re-derives schedule facts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from engine.errors import ScheduleError
from engine.presets import Preset, ScheduleConfig, TransformerConfig

if TYPE_CHECKING:
    import torch

# h/w ratios and area sizes of the reference table (pipeline spec §3.2), in the reference order.
BASE_RATIOS = (1.0, 100 / 116, 3 / 4, 2 / 3, 9 / 16, 1 / 2, 2 / 5, 1 / 3)
AREA_SIZES = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 16, 24, 32, 40, 60)
PN_NUM_SCALES = {"0.06M": 11, "0.25M": 13, "0.40M": 14, "0.90M": 15}

Shape3 = tuple[int, int, int]


@lru_cache(maxsize=None)
def template_table() -> dict[float, tuple[tuple[int, int], ...]]:
    """Template key (truncated h/w) -> the 15 (h, w) sizes, in the reference insertion order."""
    table: dict[float, tuple[tuple[int, int], ...]] = {}
    for r in BASE_RATIOS:
        hws = []
        for s in AREA_SIZES:
            pw = math.sqrt(s * s / r)
            # Python's round() is round-half-to-even, like np.round (9/16, s=6 -> 4x8, not 5x8).
            hws.append((round(pw * r), round(pw)))
        h, w = hws[-1]
        real_ratio = h / w
        table[int(real_ratio * 1000) / 1000] = tuple(hws)
        if r != 1.0:
            table[int((1 / real_ratio) * 1000) / 1000] = tuple((w_, h_) for h_, w_ in hws)
    return table


def nearest_template(h_div_w: float) -> float:
    """Template key nearest to `h_div_w` (first minimum wins, as numpy argmin)."""
    keys = list(template_table())
    return min(keys, key=lambda k: (abs(k - h_div_w), keys.index(k)))


def base_scales(config: ScheduleConfig, h_div_w: float | None = None) -> tuple[tuple[int, int], ...]:
    """The per-clip spatial pyramid (h, w) for this config and aspect ratio."""
    if config.base_scales is not None:
        return tuple(config.base_scales)
    if config.pn not in PN_NUM_SCALES:
        raise ScheduleError(f"unknown pn {config.pn!r}; known: {', '.join(PN_NUM_SCALES)}")
    key = nearest_template(config.template_h_div_w if h_div_w is None else h_div_w)
    return template_table()[key][: PN_NUM_SCALES[config.pn]]


def pt2scale_schedule(config: ScheduleConfig, h_div_w: float | None = None) -> dict[int, tuple[Shape3, ...]]:
    """Latent frame count pt -> scale schedule, the reference table for `config.video_frames`.

    pt = 1 is the image pyramid; every further clip of `frames_inner_clip` latent frames adds one
    pyramid with that t, a partial last clip gets the remainder as t.
    """
    hws = base_scales(config, h_div_w)
    clip = config.frames_inner_clip
    cf = config.video_frames // config.temporal_compression + 1
    if (cf - 1) % clip:
        raise ScheduleError(
            f"video_frames {config.video_frames} gives {cf} latent frames; (latent frames - 1) must be a multiple of {clip}"
        )
    image = tuple((1, h, w) for h, w in hws)
    table = {1: image}
    for pt in range(1 + config.pt_step, cf + 1, config.pt_step):
        full, rest = divmod(pt - 1, clip)
        clips_t = [clip] * full + ([rest] if rest else [])
        table[pt] = image + tuple((t, h, w) for t in clips_t for h, w in hws)
    return table


@dataclass(frozen=True)
class ScaleInfo:
    """One scale of the schedule and everything the sampler needs about it."""

    index: int
    shape: Shape3  # (t, h, w) in latent cells
    clip: int
    inner: int  # index inside its clip pyramid
    frame_ss: int  # absolute latent frames [frame_ss, frame_ee) of the clip
    frame_ee: int
    ref_sids: tuple[int, ...]  # earlier scales whose cached K/V this scale attends to
    is_semantic: bool  # semantic_head2 + 16-bit quantizer, else head + 64-bit quantizer
    bits: int  # bits per token (16 or 64)
    repetitions: int
    rope_rows: tuple[int, ...]  # RoPE scale-axis step index of each repetition (before text offset)
    last_use: int  # last scale index that attends to this one, -1 if none

    @property
    def tokens(self) -> int:
        t, h, w = self.shape
        return t * h * w


@dataclass(frozen=True)
class Schedule:
    """A complete scale schedule for one request."""

    scales: tuple[Shape3, ...]
    infos: tuple[ScaleInfo, ...]
    ffi: int  # first full-spatial-size scale index = scales per clip - 1
    clip_shapes: tuple[Shape3, ...]  # (t, H, W) of each clip's accumulated latent
    latent_frames: int
    num_frames: int  # pixel frames
    pixel_size: tuple[int, int]  # (H, W) in pixels
    vae_channels: int = 64
    template: float | None = None  # aspect template key (None for an explicit pyramid)

    @property
    def scales_per_clip(self) -> int:
        return self.ffi + 1

    @property
    def num_steps(self) -> int:
        return sum(i.repetitions for i in self.infos)

    @property
    def num_clips(self) -> int:
        return len(self.clip_shapes)

    @property
    def largest(self) -> Shape3:
        return self.scales[-1]


def scale_pack_info(
    scales: tuple[Shape3, ...], ffi: int, config: ScheduleConfig
) -> list[tuple[int, int, int, tuple[int, ...]]]:
    """Per scale (clip, frame_ss, frame_ee, ref_sids), the reference `get_scale_pack_info`."""
    per_clip = ffi + 1
    context_clips = config.context_frames // config.frames_inner_clip
    out = []
    for si in range(len(scales)):
        clip = si // per_clip
        last_t = scales[per_clip * (clip + 1) - 1][0]
        if clip == 0:
            ss = 0
        else:
            ss = scales[0][0] + (clip - 1) * config.frames_inner_clip
        if config.context_from_largest_no <= 0:
            refs = tuple(range(si))
        elif clip == 0:
            refs = ()
        else:
            left = [clip - 1][:context_clips]
            refs = tuple(
                c * per_clip + max(0, per_clip - config.context_from_largest_no - config.context_interval * k)
                for k, c in enumerate(left)
            )
        out.append((clip, ss, ss + last_t, refs))
    return out


def _schedule_from_scales(
    scales: tuple[Shape3, ...],
    config: ScheduleConfig,
    num_frames: int,
    vae_channels: int = 64,
    template: float | None = None,
) -> Schedule:
    full_hw = scales[-1][1:]
    ffi = next(i for i, s in enumerate(scales) if s[1:] == full_hw)
    per_clip = ffi + 1
    if len(scales) % per_clip:
        raise ScheduleError("schedule length is not a whole number of clip pyramids")
    for name, reps in (("image_rep", config.image_rep), ("video_rep", config.video_rep)):
        if len(reps) != per_clip:
            raise ScheduleError(f"{name} has {len(reps)} entries, the pyramid has {per_clip} scales")
    packs = scale_pack_info(scales, ffi, config)
    last_use = {}
    for si, (_, _, _, refs) in enumerate(packs):
        for r in refs:
            last_use[r] = si
    infos, row = [], 0
    for si, (shape, (clip, ss, ee, refs)) in enumerate(zip(scales, packs)):
        inner = si % per_clip
        rep = config.image_rep[inner] if clip == 0 else config.video_rep[inner]
        head_semantic = inner < config.semantic_scales
        quant_semantic = shape[1] * shape[2] < config.detail_scale_min_tokens
        if head_semantic != quant_semantic:
            raise ScheduleError(
                f"scale {si} {shape}: semantic_scales={config.semantic_scales} and "
                f"detail_scale_min_tokens={config.detail_scale_min_tokens} disagree"
            )
        infos.append(
            ScaleInfo(
                index=si,
                shape=shape,
                clip=clip,
                inner=inner,
                frame_ss=ss,
                frame_ee=ee,
                ref_sids=refs,
                is_semantic=head_semantic,
                bits=16 if head_semantic else 64,
                repetitions=rep,
                rope_rows=tuple(range(row, row + rep)),
                last_use=last_use.get(si, -1),
            )
        )
        row += rep
    clip_shapes = tuple((scales[c * per_clip][0], *full_hw) for c in range(len(scales) // per_clip))
    latent_frames = sum(s[0] for s in clip_shapes)
    return Schedule(
        scales=scales,
        infos=tuple(infos),
        ffi=ffi,
        clip_shapes=clip_shapes,
        latent_frames=latent_frames,
        num_frames=num_frames,
        pixel_size=(full_hw[0] * config.vae_stride, full_hw[1] * config.vae_stride),
        vae_channels=vae_channels,
        template=template,
    )


def build_schedule(
    preset_or_config: Preset | ScheduleConfig, num_frames: int, h_div_w: float | None = None
) -> Schedule:
    """The schedule for `num_frames` pixel frames (1 = image) at aspect ratio h_div_w.

    With a Preset the frame count must be one the preset offers (its `allowed_frames`); with a
    bare ScheduleConfig any key of its pt table is served. A partial last clip is supported: each
    clip accumulates at its own frame count (the reference crashes there, pipeline spec §8.7).
    """
    if isinstance(preset_or_config, Preset):
        config, vae_channels = preset_or_config.schedule, preset_or_config.transformer.vae_channels
        allowed = preset_or_config.allowed_frames
        if num_frames not in allowed:
            raise ScheduleError(
                f"preset {preset_or_config.name!r} cannot make {num_frames} frames; valid: {', '.join(map(str, allowed))}"
            )
    else:
        config, vae_channels = preset_or_config, 64
    table = pt2scale_schedule(config, h_div_w)
    tc = config.temporal_compression
    valid = [1 + tc * (pt - 1) for pt in table]
    if num_frames not in valid:
        raise ScheduleError(f"cannot make {num_frames} frames; valid frame counts: {', '.join(map(str, valid))}")
    pt = (num_frames - 1) // tc + 1
    template = None
    if config.base_scales is None:
        template = nearest_template(config.template_h_div_w if h_div_w is None else h_div_w)
    return _schedule_from_scales(table[pt], config, num_frames, vae_channels, template)


def build_segment_schedule(preset_or_config: Preset | ScheduleConfig, h_div_w: float | None = None) -> Schedule:
    """One interactive-mode segment: a single pyramid of full clips (t = frames_inner_clip).

    Every scale is "clip 0" (image repetitions, latent frames [0, clip), no references), as the
    reference interactive sampler runs it (pipeline spec §5.6).
    """
    config = preset_or_config.schedule if isinstance(preset_or_config, Preset) else preset_or_config
    vae_channels = preset_or_config.transformer.vae_channels if isinstance(preset_or_config, Preset) else 64
    clip = config.frames_inner_clip
    scales = tuple((clip, h, w) for h, w in base_scales(config, h_div_w))
    template = None
    if config.base_scales is None:
        template = nearest_template(config.template_h_div_w if h_div_w is None else h_div_w)
    return _schedule_from_scales(scales, config, clip * config.temporal_compression, vae_channels, template)


def kv_cache_elements(
    schedule: Schedule, config: TransformerConfig, policy: str = "minimal", text_len: int = 512, batch: int = 2
) -> int:
    """Peak number of cached K+V elements over all layers during sampling.

    policy "minimal" (ours): text + only scales a later scale references, freed after last use.
    policy "all": text + every scale's final repetition kept (what the reference's cache amounts to:
    it stores every scale and frees only referenced ones).
    """
    if policy not in ("minimal", "all"):
        raise ValueError(f"unknown policy {policy!r}")
    per_token = 2 * config.num_kv_heads * config.head_dim * config.depth * batch
    live: dict[int, int] = {}
    peak = 0
    for info in schedule.infos:
        if policy == "all" or info.last_use > info.index:
            live[info.index] = info.tokens
        peak = max(peak, text_len + sum(live.values()))
        if policy == "minimal":
            for r in [r for r in live if schedule.infos[r].last_use <= info.index]:
                del live[r]
    return peak * per_token


def dense_visibility(schedule: Schedule, text_len: int) -> torch.Tensor:
    """Bool [N, N] mask (row = query) over [visual tokens of every scale | text tokens].

    A scale sees itself, the text and its ref_sids; text sees text. The same structure the KV
    cache produces step by step (used for teacher-forced checks).
    """
    import torch  # the schedule itself is torch-free (front ends plan lengths with it)

    starts, pos = [], 0
    for info in schedule.infos:
        starts.append(pos)
        pos += info.tokens
    n = pos + text_len
    mask = torch.zeros(n, n, dtype=torch.bool)
    mask[pos:, pos:] = True
    for info in schedule.infos:
        rows = slice(starts[info.index], starts[info.index] + info.tokens)
        mask[rows, rows] = True
        mask[rows, pos:] = True
        for r in info.ref_sids:
            mask[rows, starts[r] : starts[r] + schedule.infos[r].tokens] = True
    return mask
