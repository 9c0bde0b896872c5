"""ReusePolicy: parsing and validation (the reuse behaviour itself is tested in test_video.py)."""

from __future__ import annotations

import pytest

from tokfuse_rt.video import ReusePolicy


@pytest.mark.parametrize(
    "spec,interval,scene",
    [
        (None, 10, 0.05),
        ("auto", 10, 0.05),
        ("on", 10, 0.05),
        (True, 10, 0.05),
        ("off", 1, None),
        ("none", 1, None),
        ("0", 1, None),
        ("1", 1, None),
        (0, 1, None),
        (1, 1, None),
        (False, 1, None),
        (5, 5, 0.05),
        ("7", 7, 0.05),
        ("interval=4", 4, 0.05),
        ("scene=0.1", 10, 0.1),
        ("interval=30,scene=off", 30, None),
        (" Interval = 3 , scene = 0.5 ", 3, 0.5),
        ("key=6,scene=none", 6, None),
    ],
)
def test_parse(spec, interval, scene):
    p = ReusePolicy.parse(spec)
    assert (p.interval, p.scene_threshold) == (interval, scene)
    assert p.enabled == (interval > 1)
    assert ("off" in p.describe()) == (interval == 1)


def test_parse_errors():
    with pytest.raises(ValueError, match="cannot parse"):
        ReusePolicy.parse("sometimes")
    with pytest.raises(ValueError, match="cannot parse"):
        ReusePolicy.parse("interval=x")
    with pytest.raises(ValueError, match="cannot parse"):
        ReusePolicy.parse("colour=3")
    with pytest.raises(ValueError, match=r"scene threshold must be in \[0, 1\]"):
        ReusePolicy.parse("scene=2")
    with pytest.raises(ValueError, match="interval must be an int >= 1"):
        ReusePolicy(interval=0)
    with pytest.raises(TypeError, match="reuse must be"):
        ReusePolicy.parse(1.5)
    p = ReusePolicy(interval=3)
    assert ReusePolicy.parse(p) is p and ReusePolicy.off() == ReusePolicy(interval=1, scene_threshold=None)
