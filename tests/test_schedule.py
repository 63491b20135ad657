import json
from dataclasses import replace

import pytest

from engine import presets
from engine.errors import ScheduleError
from engine.presets import QWEN8B, ScheduleConfig
from engine.model.rope import spread_positions
from engine.model.schedule import (
    base_scales,
    build_schedule,
    kv_cache_elements,
    nearest_template,
    pt2scale_schedule,
    template_table,
)
from golden_utils import GOLDEN, GOLDEN_PRESET

# pipeline spec §3.2: rows = area size index, columns = ratios 1, 100/116, 3/4, 2/3, 9/16, 1/2, 2/5, 1/3
BASE_TABLE = """
1x1 1x1 1x1 1x1 1x1 1x1 1x2 1x2
2x2 2x2 2x2 2x2 2x3 1x3 1x3 1x3
3x3 3x3 3x3 2x4 2x4 2x4 2x5 2x5
4x4 4x4 3x5 3x5 3x5 3x6 3x6 2x7
5x5 5x5 4x6 4x6 4x7 4x7 3x8 3x9
6x6 6x6 5x7 5x7 4x8 4x8 4x9 3x10
7x7 6x8 6x8 6x9 5x9 5x10 4x11 4x12
8x8 7x9 7x9 7x10 6x11 6x11 5x13 5x14
10x10 9x11 9x12 8x12 8x13 7x14 6x16 6x17
12x12 11x13 10x14 10x15 9x16 8x17 8x19 7x21
16x16 15x17 14x18 13x20 12x21 11x23 10x25 9x28
24x24 22x26 21x28 20x29 18x32 17x34 15x38 14x42
32x32 30x34 28x37 26x39 24x43 23x45 20x51 18x55
40x40 37x43 35x46 33x49 30x53 28x57 25x63 23x69
60x60 56x65 52x69 49x73 45x80 42x85 38x95 35x104
"""
KEYS = [1.0, 0.861, 1.16, 0.753, 1.326, 0.671, 1.489, 0.562, 1.777, 0.494, 2.023, 0.4, 2.5, 0.336, 2.971]
# §3.3 pixel sizes (H x W) per template for pn 0.06M, 0.25M, 0.40M, 0.90M
PIXELS = {
    1.0: ["256x256", "512x512", "640x640", "960x960"],
    0.861: ["240x272", "480x544", "592x688", "896x1040"],
    0.753: ["224x288", "448x592", "560x736", "832x1104"],
    0.671: ["208x320", "416x624", "528x784", "784x1168"],
    0.562: ["192x336", "384x688", "480x848", "720x1280"],
    0.494: ["176x368", "368x720", "448x912", "672x1360"],
    0.4: ["160x400", "320x816", "400x1008", "608x1520"],
    0.336: ["144x448", "288x880", "368x1104", "560x1664"],
}
TRANSPOSED = {1.16: 0.861, 1.326: 0.753, 1.489: 0.671, 1.777: 0.562, 2.023: 0.494, 2.5: 0.4, 2.971: 0.336}
HW_16_9 = [(1, 1), (2, 3), (2, 4), (3, 5), (4, 7), (4, 8), (5, 9), (6, 11), (8, 13), (9, 16), (12, 21),
           (18, 32), (24, 43), (30, 53), (45, 80)]


def _hw(s):
    h, w = s.split("x")
    return int(h), int(w)


def test_template_keys_and_base_table():
    table = template_table()
    assert list(table) == KEYS
    rows = [line.split() for line in BASE_TABLE.strip().splitlines()]
    direct = [1.0, 0.861, 0.753, 0.671, 0.562, 0.494, 0.4, 0.336]
    for col, key in enumerate(direct):
        assert list(table[key]) == [_hw(r[col]) for r in rows]
    for key, base in TRANSPOSED.items():
        assert list(table[key]) == [(w, h) for h, w in table[base]]
    assert nearest_template(0.571) == 0.562 and nearest_template(1.0) == 1.0


@pytest.mark.parametrize("pn_index,pn", enumerate(["0.06M", "0.25M", "0.40M", "0.90M"]))
def test_pixel_sizes(pn_index, pn):
    def pixels(key):
        h, w = base_scales(ScheduleConfig(pn=pn), h_div_w=key)[-1]
        return h * 16, w * 16

    for key, sizes in PIXELS.items():
        assert pixels(key) == _hw(sizes[pn_index])
    for key, base in TRANSPOSED.items():
        h, w = _hw(PIXELS[base][pn_index])
        assert pixels(key) == (w, h)


def test_720p_schedule_and_pack_info():
    s = build_schedule(presets.get("720p"), 81)
    assert s.scales == tuple((1, h, w) for h, w in HW_16_9) + tuple((20, h, w) for h, w in HW_16_9)
    assert (s.ffi, s.num_steps, len(s.scales), s.latent_frames, s.pixel_size) == (14, 85, 30, 21, (720, 1280))
    assert s.template == 0.562 and build_schedule(presets.get("720p"), 1, h_div_w=1.7).pixel_size == (1280, 720)
    assert sum(i.tokens for i in s.infos) == 157_479
    for i in s.infos:
        if i.index <= 14:
            assert (i.frame_ss, i.frame_ee, i.ref_sids, i.repetitions) == (0, 1, (), 3)
        else:
            assert (i.frame_ss, i.frame_ee, i.ref_sids) == (1, 21, (14,))
        assert i.is_semantic == (i.inner < 12) and i.bits == (16 if i.inner < 12 else 64)
    # Appendix B: repetitions, RoPE scale positions (512 + row)
    assert [i.repetitions for i in s.infos[15:]] == [3] * 12 + [2, 1, 1]
    assert s.infos[14].rope_rows == (42, 43, 44) and s.infos[15].rope_rows == (45, 46, 47)
    assert s.infos[27].rope_rows == (81, 82) and s.infos[29].rope_rows == (84,)
    assert s.infos[14].last_use == 29 and s.infos[13].last_use == -1
    image = build_schedule(presets.get("720p"), 1)
    assert (len(image.scales), image.num_steps, sum(i.tokens for i in image.infos)) == (15, 45, 7_499)


def test_480p_schedules():
    p = presets.get("480p")
    five, ten = build_schedule(p, 81), build_schedule(p, 161)
    assert (len(five.scales), five.num_steps, sum(i.tokens for i in five.infos)) == (28, 81, 81_879)
    assert (len(ten.scales), ten.num_steps, sum(i.tokens for i in ten.infos)) == (42, 120, 159_859)
    assert five.scales[:14] == tuple((1, h, w) for h, w in HW_16_9[:14]) and five.pixel_size == (480, 848)
    assert [(i.frame_ss, i.frame_ee, i.ref_sids) for i in ten.infos[13:15] + ten.infos[27:29]] == [
        (0, 1, ()), (1, 21, (13,)), (1, 21, (13,)), (21, 41, (27,))]
    assert [i.is_semantic for i in ten.infos[28:]] == [True] * 11 + [False] * 3
    assert ten.infos[28].rope_rows[0] == 593 - 512 and ten.infos[41].rope_rows == (631 - 512,)
    assert build_schedule(p, 1).num_steps == 42


def test_pt_table_keys_and_partial_clip():
    table = pt2scale_schedule(presets.get("480p").schedule)
    assert list(table) == [1] + list(range(5, 42, 4))
    assert table[5][14:] == tuple((4, h, w) for h, w in HW_16_9[:14])
    s = build_schedule(presets.get("480p").schedule, 97)  # clips of 20 then 4 latent frames
    assert s.clip_shapes == ((1, 30, 53), (20, 30, 53), (4, 30, 53)) and s.latent_frames == 25
    assert (s.infos[28].frame_ss, s.infos[28].frame_ee) == (21, 25)


def test_invalid_frames():
    with pytest.raises(ScheduleError, match="valid: 1, 81"):
        build_schedule(presets.get("720p"), 49)
    with pytest.raises(ScheduleError, match="valid frame counts: 1, 17, 33"):
        build_schedule(ScheduleConfig(), 80)
    with pytest.raises(ScheduleError, match="multiple of 20"):
        build_schedule(ScheduleConfig(video_frames=50), 1)
    with pytest.raises(ScheduleError, match="disagree"):
        build_schedule(ScheduleConfig(semantic_scales=11), 1)


def test_tiny_schedule_matches_golden():
    tiny = GOLDEN_PRESET
    image = [(1, 1, 1), (1, 2, 2), (1, 2, 3), (1, 3, 4)]
    assert list(build_schedule(tiny, 1).scales) == image
    video = build_schedule(tiny, 17)
    assert list(video.scales) == image + [(4, 1, 1), (4, 2, 2), (4, 2, 3), (4, 3, 4)]
    assert (video.latent_frames, video.pixel_size, video.num_steps, video.template) == (5, (48, 64), 14, None)
    assert [i.bits for i in video.infos] == [16, 16, 64, 64] * 2
    assert [i.rope_rows[0] for i in video.infos] == [0, 2, 4, 6, 8, 10, 12, 13]
    overrides = json.loads((GOLDEN / "config.json").read_text())["args_overrides"]
    assert [list(GOLDEN_PRESET.schedule.image_rep), list(GOLDEN_PRESET.schedule.video_rep)] == [
        json.loads(overrides["image_scale_repetition"]), json.loads(overrides["video_scale_repetition"])]


def test_tiny_preset_differs_from_the_golden_one_only_in_width_and_repetitions():
    tiny = presets.get("tiny")
    reps = {"image_rep": tiny.schedule.image_rep, "video_rep": tiny.schedule.video_rep}
    width = {k: getattr(tiny.transformer, k) for k in ("embed_dim", "num_heads", "num_kv_heads", "mlp_hidden")}
    assert tiny == replace(GOLDEN_PRESET, schedule=replace(GOLDEN_PRESET.schedule, **reps),
                           transformer=replace(GOLDEN_PRESET.transformer, **width))


def test_rope_positions_appendix_a():
    assert spread_positions(2, 45).tolist() == [0, 22]
    assert spread_positions(7, 80).tolist() == [0, 11, 23, 34, 46, 57, 69]
    assert spread_positions(12, 45).tolist() == [0, 4, 8, 11, 15, 19, 22, 26, 30, 34, 38, 41]
    assert spread_positions(8, 30).tolist() == [0, 4, 8, 11, 15, 19, 22, 26]
    assert spread_positions(43, 53).tolist()[:8] == [0, 1, 2, 4, 5, 6, 7, 9]
    # 720p (24, 43) columns, Appendix A, full row
    assert spread_positions(43, 80).tolist() == [
        0, 2, 4, 6, 7, 9, 11, 13, 15, 17, 19, 20, 22, 24, 26, 28, 30, 32, 33, 35, 37, 39, 41, 43, 45, 47, 48, 50,
        52, 54, 56, 58, 60, 61, 63, 65, 67, 69, 71, 73, 74, 76, 78]
    assert spread_positions(30, 45).tolist()[:6] == [0, 2, 3, 4, 6, 8]


def test_kv_cache_policy_720p():
    s = build_schedule(presets.get("720p"), 81)
    per_token = 2 * 8 * 128 * 36 * 2
    assert kv_cache_elements(s, QWEN8B, "minimal") == (512 + 3600) * per_token
    assert kv_cache_elements(s, QWEN8B, "all") == (512 + 157_479) * per_token


def test_interactive_segment_schedule():
    from engine.model.schedule import build_segment_schedule

    s = build_segment_schedule(presets.get("interact"))
    assert s.scales == tuple((20, h, w) for h, w in HW_16_9[:14])
    assert s.num_steps == 39 and s.clip_shapes == ((20, 30, 53),) and s.num_frames == 80
    assert all((i.clip, i.frame_ss, i.frame_ee, i.ref_sids) == (0, 0, 20, ()) for i in s.infos)
    assert [i.is_semantic for i in s.infos] == [True] * 11 + [False] * 3
