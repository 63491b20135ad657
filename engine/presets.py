"""Named presets: frozen configs for the transformer, the scale schedule and sampling.

Every constant the reference code hard-codes (clip length 20, template pick 0.571, the 512-row
text table, ...) is a field here whose default reproduces the released behaviour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from engine.choices import GUIDANCE
from engine.errors import RequestError, UnknownPresetError
from engine.request import sampling_value_problem

# The released 720p/480p scripts append this to every video prompt; the interactive script does not.
RELEASED_STYLE_SUFFIX = ", Close-up on big objects, emphasize scale and detail"


@dataclass(frozen=True)
class TransformerConfig:
    """Architecture of the Qwen-style InfinityStar transformer (`infinity_qwen8b` when released)."""

    depth: int = 36
    block_chunks: int = 6
    embed_dim: int = 4096
    num_heads: int = 32
    num_kv_heads: int = 8
    mlp_hidden: int = 16384
    text_channels: int = 2048
    # Rows of `cfg_uncond` and offset of the visual positions on the RoPE scale axis (512 released).
    text_maxlen: int = 512
    vae_channels: int = 64
    detail_bits: int = 64
    semantic_bits: int = 16
    norm_eps: float = 1e-6
    rope_base: float = 10000.0
    qkvo_bias: bool = False

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    def __post_init__(self) -> None:
        if self.depth % self.block_chunks:
            raise ValueError(f"depth {self.depth} is not divisible by block_chunks {self.block_chunks}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError("num_heads must be a multiple of num_kv_heads")
        if self.head_dim % 8:
            raise ValueError(f"head_dim {self.head_dim} must be divisible by 8 for the 4-axis RoPE")


@dataclass(frozen=True)
class ScheduleConfig:
    """Everything that shapes the scale schedule (pipeline spec §3)."""

    pn: str = "0.90M"
    # `video_frames` the reference builds its pt -> schedule table with (81 or 161).
    video_frames: int = 81
    # Explicit per-clip pyramid (h, w); None = the dynamic-resolution table for (template, pn).
    base_scales: tuple[tuple[int, int], ...] | None = None
    template_h_div_w: float = 0.571
    frames_inner_clip: int = 20  # latent frames per video clip
    temporal_compression: int = 4  # pixel frames per latent frame (after the first)
    pt_step: int = 4  # latent-frame step between table keys (one second at 16 fps)
    vae_stride: int = 16  # pixels per latent cell
    image_rep: tuple[int, ...] = (3,) * 15
    video_rep: tuple[int, ...] = (3,) * 12 + (2, 1, 1)
    semantic_scales: int = 12
    detail_scale_min_tokens: int = 750
    context_frames: int = 10000
    context_from_largest_no: int = 1
    context_interval: int = 2


@dataclass(frozen=True)
class SamplingConfig:
    """Guidance, temperatures and RNG defaults of the sampling loop."""

    guidance: str = "apg"  # one of GUIDANCE: "apg" | "cfg"
    cfg_scale: float = 34.0
    apg_norm_threshold: float = 0.05
    apg_eta: float = 0.0
    tau_image: float = 1.0
    tau_video: float = 0.4
    seed: int = 41
    max_repeat_times: int = 10000
    # Guidance scale on the video clips' detail scales (clip > 0, not semantic); None: cfg_scale.
    # The official models guide every scale alike; the tiny model sets 1 there (README, "The tiny model").
    cfg_video_detail: float | None = None

    def __post_init__(self) -> None:
        if self.guidance not in GUIDANCE:
            raise ValueError(f"guidance must be 'apg' or 'cfg', not {self.guidance!r}")
        values = [("cfg", "cfg", self.cfg_scale), ("tau_image", "tau_image", self.tau_image),
                  ("tau_video", "tau_video", self.tau_video)]
        if self.cfg_video_detail is not None:
            values.append(("cfg_video_detail", "cfg", self.cfg_video_detail))
        for name, kind, value in values:
            problem = sampling_value_problem(kind, value)
            if problem:
                raise RequestError(f"sampling {name}: {problem}")

    def cfg_at(self, clip: int, semantic: bool) -> float:
        """The guidance scale of a scale of clip `clip` (0: the image) that is `semantic` or not."""
        if clip > 0 and not semantic and self.cfg_video_detail is not None:
            return self.cfg_video_detail
        return self.cfg_scale

    @property
    def guided(self) -> bool:
        """Whether any scale is guided, i.e. the sampler runs an unconditional row too."""
        return self.cfg_scale != 1 or self.cfg_video_detail not in (None, 1)


@dataclass(frozen=True)
class VAEConfig:
    """Every construction field of the official `AutoencoderKLCogVideoX` that shapes the model
    (engine.model.vae builds it; spec/vae.md).

    Fixed by the official code and therefore not fields: RMS norms, SiLU, DC ("3d-dc") samplers
    with norm, spatial factor 2 in every sampler, no attention, no quant convs, two mid-block
    resnets, a 2x2 latent fold.
    """

    name: str = "released"
    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 16
    block_out_channels: tuple[int, ...] = (96, 192, 384, 384, 384)
    layers_per_block: int = 2
    spatial_compression: tuple[int, ...] = (2, 2, 2)
    temporal_compression: tuple[int, ...] = (2, 2)
    semantic_dim: int = 16  # bits of `quantizer.lfq_semantic`
    detail_dim: int = 64  # bits of `quantizer.lfq_detail`

    def __post_init__(self) -> None:
        blocks = len(self.block_out_channels) - 1
        if any(f != 2 for f in self.spatial_compression):
            raise ValueError("the DC samplers only support spatial factor 2")
        if len(self.spatial_compression) > blocks or len(self.temporal_compression) > blocks:
            raise ValueError("more compression steps than encoder blocks")

    @property
    def feature_channels(self) -> int:
        """Channels of the transformer-facing latent (latent_channels folded 2x2)."""
        return 4 * self.latent_channels

    @property
    def spatial_factor(self) -> int:
        """Pixels per latent cell along H or W (encoder factors times the 2x2 fold)."""
        return 2 ** len(self.spatial_compression) * 2

    @property
    def temporal_factor(self) -> int:
        return math.prod(self.temporal_compression)


VAE_CONFIGS = {
    "released": VAEConfig(),
    # The golden fixtures' VAE (tests/fixtures/golden/config.json): narrow, otherwise released.
    "golden": VAEConfig(name="golden", block_out_channels=(4, 8, 8, 8, 8)),
    # The tiny preset's trained VAE (engine/assets/tiny), wider than the golden one. The earlier
    # 4-8-8-8-8 tiny VAE, trained at lr 2e-3, drew red and green as yellow; the shipped one uses
    # engine.train.vae_phase's recipe (README, "The tiny model"); the narrow width was not retried with it.
    "tiny": VAEConfig(name="tiny", block_out_channels=(8, 16, 16, 16, 16)),
}


@dataclass(frozen=True)
class PromptDecoration:
    """What the official video scripts add to a prompt before T5 (pipeline spec §2.1).

    Images get neither unless decoration is asked for (then only the suffix): the image training
    captions carry no tag, and the suffix belongs to the video scripts.
    """

    duration_tag: bool = True  # `<<<t=5s>>>` before a video prompt (append_duration2caption)
    suffix: str = ""  # appended to the prompt: RELEASED_STYLE_SUFFIX for the 720p/480p scripts


@dataclass(frozen=True)
class Preset:
    """A runnable model: architecture, schedule, sampling defaults and the weights it needs."""

    name: str
    transformer: TransformerConfig
    schedule: ScheduleConfig
    sampling: SamplingConfig
    vae: VAEConfig
    text_encoder: str  # "flan-t5-xl" | "tiny", resolved by engine.model.text_encoder
    fps: int
    frames: tuple[int, ...]  # video frame counts offered; 1 (text-to-image) is always allowed too
    checkpoint_dir: str  # folder of the hub repo holding the transformer shards
    description: str
    decoration: PromptDecoration = PromptDecoration()
    # How `extend` and story segments continue a video: "forced" = the conditioning window's clips
    # are forced (480p/720p/tiny), "interact" = the InfinityStar-Interact recipe (engine.generate.conditioning).
    continuation: Literal["forced", "interact"] = "forced"

    @property
    def allowed_frames(self) -> tuple[int, ...]:
        return tuple(sorted({1, *self.frames}))


QWEN8B = TransformerConfig()

_PRESETS: dict[str, Preset] = {
    "720p": Preset(
        name="720p",
        transformer=QWEN8B,
        schedule=ScheduleConfig(),
        sampling=SamplingConfig(),
        vae=VAE_CONFIGS["released"],
        text_encoder="flan-t5-xl",
        fps=16,
        frames=(81,),
        checkpoint_dir="infinitystar_8b_720p_weights",
        description="InfinityStar 8B, 720x1280, 5 s (81 frames) at 16 fps",
        decoration=PromptDecoration(suffix=RELEASED_STYLE_SUFFIX),
    ),
    "480p": Preset(
        name="480p",
        transformer=QWEN8B,
        schedule=ScheduleConfig(
            pn="0.40M",
            video_frames=161,
            image_rep=(3,) * 14,
            video_rep=(3,) * 12 + (2, 1),
            semantic_scales=11,
            detail_scale_min_tokens=350,
        ),
        sampling=SamplingConfig(),
        vae=VAE_CONFIGS["released"],
        text_encoder="flan-t5-xl",
        fps=16,
        frames=(81, 161),
        checkpoint_dir="infinitystar_8b_480p_weights",
        description="InfinityStar 8B, 480x848, 5 s or 10 s (81/161 frames) at 16 fps",
        decoration=PromptDecoration(suffix=RELEASED_STYLE_SUFFIX),
    ),
    "interact": Preset(
        name="interact",
        transformer=QWEN8B,
        schedule=ScheduleConfig(
            pn="0.40M",
            video_frames=161,
            image_rep=(3,) * 12 + (2, 1),
            video_rep=(3,) * 12 + (2, 1),
            semantic_scales=11,
            detail_scale_min_tokens=350,
            context_frames=1000,
        ),
        sampling=SamplingConfig(
            guidance="cfg", cfg_scale=3.0, tau_image=0.5, tau_video=0.5, seed=0, max_repeat_times=1000
        ),
        vae=VAE_CONFIGS["released"],
        text_encoder="flan-t5-xl",
        fps=16,
        frames=(81,),
        checkpoint_dir="InfinityStarInteract_24K_iters",
        description="InfinityStar-Interact 8B, 480x848; --then/--story and extend continue 5 s per prompt",
        continuation="interact",
    ),
    # Exactly the architecture and schedule of tests/fixtures/golden (CPU seconds); the shipped
    # weights are trained by `python -m engine.train`, the golden tests load their own random ones.
    # text_maxlen stays 512: the golden checkpoint has a [512, 48] cfg_uncond and RoPE offset 512.
    # fps 16 keeps the released 4-latent-frames-per-second arithmetic (17 frames = 1 s).
    # 33 frames (image + two 4-latent clips) give `extend` a whole clip to force and one to sample,
    # the structure of the 480p continuation (pipeline spec §5.5) in miniature.
    "tiny": Preset(
        name="tiny",
        transformer=TransformerConfig(
            depth=4,
            block_chunks=2,
            # The golden fixtures' transformer is half as wide (64 / 2 / 1 / 256; tests: GOLDEN_PRESET).
            embed_dim=128,
            num_heads=4,
            num_kv_heads=2,
            mlp_hidden=512,
            text_channels=48,
        ),
        schedule=ScheduleConfig(
            pn="0.06M",
            video_frames=33,
            base_scales=((1, 1), (2, 2), (2, 3), (3, 4)),
            frames_inner_clip=4,
            # The golden fixtures' schedule repeats the scales (2, 2, 2, 2) / (2, 2, 1, 1) (tests:
            # GOLDEN_PRESET). The shipped weights repeat the two detail scales more, the video clips'
            # as often as the image's: quantized that way at latent scale 0.75, the VAE's reconstructions
            # of the 24 evaluation clips name 20/24 shapes right (video (2, 2, 2, 4) at 0.5: 17/24).
            image_rep=(2, 2, 4, 8),
            video_rep=(2, 2, 4, 8),
            semantic_scales=2,
            detail_scale_min_tokens=6,
        ),
        # Tuned on engine.train.evaluate.TUNING (seeds 5-7) for the previous weights (README "The tiny
        # model"): CFG 1.5, none on the video clips' detail scales (guiding them fades the object out
        # over the clip), temperature 0.5: all four right in t2v 35, i2v 35, extend 35 of 36. Kept,
        # not re-tuned, for the shipped weights: 36, 36 and 35 of 36.
        sampling=SamplingConfig(guidance="cfg", cfg_scale=1.5, tau_image=0.5, tau_video=0.5, cfg_video_detail=1.0),
        vae=VAE_CONFIGS["tiny"],
        text_encoder="tiny",
        fps=16,
        frames=(17, 33),
        checkpoint_dir="tiny",
        description="Tiny model trained on synthetic shape videos: 48x64, 17 or 33 frames",
    ),
}


def names() -> tuple[str, ...]:
    """Registered preset names."""
    return tuple(_PRESETS)


def get(name: str) -> Preset:
    """The preset called `name`; UnknownPresetError lists the known ones."""
    try:
        return _PRESETS[name]
    except KeyError:
        raise UnknownPresetError(f"unknown preset {name!r}; known presets: {', '.join(_PRESETS)}") from None
