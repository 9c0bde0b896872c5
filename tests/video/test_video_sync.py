"""pair_by_time: each visible frame takes the nearest infrared frame; overlap, drops and duplicates."""

from __future__ import annotations

from fractions import Fraction

import pytest

from tokfuse_rt.video import SyncStats, pair_by_time


class F:
    def __init__(self, name, t):
        self.name, self.t = name, float(t)

    def __repr__(self):
        return self.name


def frames(prefix, fps, n, start=0.0):
    return [F(f"{prefix}{i}", start + Fraction(i) / fps) for i in range(n)]


def run(vis, ir, ir_fps):
    st = SyncStats()
    pairs = [(v.name, i.name) for v, i in pair_by_time(vis, ir, 0.5 / ir_fps, st)]
    return pairs, st


def test_same_rate_pairs_one_to_one():
    pairs, st = run(frames("v", 30, 5), frames("i", 30, 5), 30)
    assert pairs == [(f"v{k}", f"i{k}") for k in range(5)]
    assert (st.fused, st.ir_dropped, st.ir_duplicated, st.vis_before, st.vis_after, st.ir_after) == (5, 0, 0, 0, 0, 0)
    assert (st.t_first, st.t_last) == (0.0, pytest.approx(4 / 30))


def test_infrared_twice_as_fast_drops_every_other_frame():
    # vis at 0, 1/15, 2/15 ...; ir at k/30: nearest is ir 2k exactly
    pairs, st = run(frames("v", 15, 4), frames("i", 30, 8), 30)
    assert pairs == [("v0", "i0"), ("v1", "i2"), ("v2", "i4"), ("v3", "i6")]
    assert st.ir_dropped == 3 and st.ir_after == 1 and st.ir_duplicated == 0


def test_infrared_half_rate_duplicates_and_ties_go_to_the_earlier_frame():
    # vis at k/30; ir at k/15. vis 1 (1/30) is equally far from ir 0 (0) and ir 1 (2/30): earlier wins
    pairs, st = run(frames("v", 30, 6), frames("i", 15, 3), 15)
    assert pairs == [("v0", "i0"), ("v1", "i0"), ("v2", "i1"), ("v3", "i1"), ("v4", "i2"), ("v5", "i2")]
    assert st.ir_duplicated == 3 and st.ir_dropped == 0


def test_nearest_in_time_with_jitter():
    vis = [F("v0", 0.0), F("v1", 0.1), F("v2", 0.2)]
    ir = [F("i0", 0.01), F("i1", 0.04), F("i2", 0.09), F("i3", 0.16), F("i4", 0.21)]
    pairs, st = run(vis, ir, 25)
    assert pairs == [("v0", "i0"), ("v1", "i2"), ("v2", "i4")]
    assert st.ir_dropped == 2 and st.ir_after == 0


def test_different_lengths_fuse_the_overlap():
    # infrared starts 2 frames late and stops after 3 frames: vis 0, 1 before it, vis 5.. after it
    pairs, st = run(frames("v", 30, 8), frames("i", 30, 3, start=Fraction(2, 30)), 30)
    assert pairs == [("v2", "i0"), ("v3", "i1"), ("v4", "i2")]
    assert (st.vis_before, st.vis_after, st.vis_frames, st.ir_frames) == (2, 3, 8, 3)
    # infrared longer than visible: the rest of it is read and counted
    pairs, st = run(frames("v", 30, 3), frames("i", 30, 7), 30)
    assert len(pairs) == 3 and st.ir_after == 4 and st.ir_frames == 7


def test_half_a_frame_of_tolerance_at_the_ends():
    ir = frames("i", 30, 3)  # 0 .. 2/30
    vis = [F("a", -0.4 / 30), F("b", 2 / 30 + 0.4 / 30), F("c", 2 / 30 + 0.6 / 30)]
    pairs, st = run(vis, ir, 30)
    assert pairs == [("a", "i0"), ("b", "i2")] and st.vis_after == 1


def test_no_overlap_and_no_infrared():
    pairs, st = run(frames("v", 30, 3), frames("i", 30, 3, start=10), 30)
    assert pairs == [] and st.fused == 0 and st.vis_before == 3
    pairs, st = run(frames("v", 30, 3), [], 30)
    assert pairs == [] and st.vis_before == 3 and st.ir_frames == 0
