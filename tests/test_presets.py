import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from engine import presets
from engine.errors import InfinistarError, RequestError, UnknownPresetError
from engine.model.transformer import InfinityTransformer
from engine.presets import SamplingConfig
from golden_utils import GOLDEN_PRESET

KEYS = Path(__file__).parent / "fixtures" / "keys"


def test_names_and_unknown():
    assert presets.names() == ("720p", "480p", "interact", "tiny")
    with pytest.raises(UnknownPresetError) as err:
        presets.get("1080p")
    assert isinstance(err.value, InfinistarError) and not isinstance(err.value, KeyError)
    assert "720p" in str(err.value) and "tiny" in str(err.value)


@pytest.mark.parametrize("name,keyfile", [("720p", "720p"), ("480p", "480p"), ("interact", "480p")])
def test_released_architecture_on_meta(name, keyfile):
    expected = json.loads((KEYS / f"transformer_8b_{keyfile}.json").read_text())
    with torch.device("meta"):
        model = InfinityTransformer(presets.get(name).transformer)
    state = model.state_dict()
    assert len(state) == 407
    assert {k: list(v.shape) for k, v in state.items()} == {k: v[:-1] for k, v in expected.items()}
    assert sum(p.numel() for p in model.parameters()) == 8_768_382_112
    assert all(p.is_meta for p in model.parameters())


def test_preset_settings():
    p720, p480, inter = presets.get("720p"), presets.get("480p"), presets.get("interact")
    assert p720.sampling.guidance == "apg" and p720.sampling.cfg_scale == 34 and p720.sampling.seed == 41
    assert p720.schedule.semantic_scales == 12 and p720.schedule.detail_scale_min_tokens == 750
    assert p480.schedule.video_rep == (3,) * 12 + (2, 1) and p480.frames == (81, 161)
    assert inter.sampling.guidance == "cfg" and inter.sampling.cfg_scale == 3
    assert inter.sampling.tau_image == inter.sampling.tau_video == 0.5
    assert p720.allowed_frames == (1, 81)
    # The released models guide every scale alike; only the tiny one leaves its video detail unguided.
    assert all(p.sampling.cfg_video_detail is None for p in (p720, p480, inter))
    tiny = presets.get("tiny").sampling
    assert (tiny.cfg_at(0, False), tiny.cfg_at(1, True), tiny.cfg_at(1, False)) == (1.5, 1.5, 1.0)
    assert p720.sampling.cfg_at(1, False) == 34 and tiny.guided
    assert not replace(tiny, cfg_scale=1.0).guided and replace(tiny, cfg_scale=1.0, cfg_video_detail=2.0).guided


@pytest.mark.parametrize("value", [math.nan, -1.0, "3"])
def test_a_bad_video_detail_guidance_is_refused(value):
    with pytest.raises(RequestError, match="sampling cfg_video_detail: .* is not a number"):
        SamplingConfig(cfg_video_detail=value)


def test_golden_preset_matches_golden_config():
    cfg = json.loads((Path(__file__).parent / "fixtures" / "golden" / "config.json").read_text())
    t = GOLDEN_PRESET.transformer
    arch = cfg["tiny_gpt_arch"]
    assert (t.depth, t.block_chunks, t.embed_dim, t.num_heads, t.num_kv_heads) == (
        arch["depth"], arch["block_chunks"], arch["embed_dim"], arch["num_heads"], arch["num_key_value_heads"])
    assert t.mlp_hidden == cfg["derived"]["mlp_hidden"] and t.text_channels == 48
    with torch.device("meta"):
        n = sum(p.numel() for p in InfinityTransformer(t).parameters())
    assert n == cfg["derived"]["n_params_transformer"]
