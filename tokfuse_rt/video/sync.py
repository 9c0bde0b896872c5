"""Pair two frame streams by presentation time.

The visible stream sets the output timeline: each visible frame at time t takes the infrared frame
whose time is nearest to t (a tie, within 1 ns, goes to the earlier infrared frame). Visible frames more than
``tolerance`` (half an infrared frame period) before the first or after the last infrared frame lie
outside the overlap and are not fused. Infrared frames never taken inside the overlap are *dropped*
(infrared faster than visible); infrared frames taken more than once are *duplicated* (infrared
slower, or missing frames). Frames are any objects with a ``t`` attribute (seconds).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

TIE = 1e-9  # s: two infrared frames this close to equally near count as a tie (float timestamps)


@dataclass
class SyncStats:
    vis_frames: int = 0  # visible frames read
    ir_frames: int = 0  # infrared frames read
    fused: int = 0  # pairs produced
    vis_before: int = 0  # visible frames before the infrared stream starts (not fused)
    vis_after: int = 0  # visible frames after the infrared stream ends (not fused)
    ir_before: int = 0  # infrared frames before the first fused visible frame (not used)
    ir_after: int = 0  # infrared frames after the last fused visible frame (not used)
    ir_dropped: int = 0  # infrared frames inside the overlap that no visible frame took
    ir_duplicated: int = 0  # extra uses of an infrared frame already taken
    t_first: float | None = None  # time of the first / last fused visible frame (s)
    t_last: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def pair_by_time(vis, ir, tolerance: float, stats: SyncStats | None = None):
    """Yield (vis_frame, ir_frame) pairs; ``stats`` (a SyncStats) is updated as frames are read.

    Both inputs are iterables in presentation order. Once the visible frames are exhausted the rest
    of the infrared frames is read (and counted) too."""
    st = stats if stats is not None else SyncStats()
    ir_it = iter(ir)

    def next_ir():
        f = next(ir_it, None)
        if f is not None:
            st.ir_frames += 1
        return f

    cur = next_ir()
    if cur is None:
        for _ in vis:
            st.vis_frames += 1
            st.vis_before += 1
        return
    first_t = cur.t
    nxt = next_ir()
    uses = 0
    for v in vis:
        st.vis_frames += 1
        t = v.t
        if t < first_t - tolerance:
            st.vis_before += 1
            continue
        while nxt is not None and abs(nxt.t - t) < abs(cur.t - t) - TIE:
            if uses == 0:
                if st.fused == 0:
                    st.ir_before += 1
                else:
                    st.ir_dropped += 1
            cur, uses = nxt, 0
            nxt = next_ir()
        if nxt is None and t > cur.t + tolerance:
            st.vis_after += 1
            continue
        if uses:
            st.ir_duplicated += 1
        uses += 1
        st.fused += 1
        if st.t_first is None:
            st.t_first = t
        st.t_last = t
        yield v, cur
    if uses == 0:
        if st.fused == 0:
            st.ir_before += 1
        else:
            st.ir_after += 1
    while nxt is not None:
        st.ir_after += 1
        nxt = next_ir()
