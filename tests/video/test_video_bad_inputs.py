"""fuse_video on bad input: each case made with PyAV/FFmpeg at test time from real frames.
A clear error or a report, never a half-written output (nor a temporary file left behind)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tokfuse_rt import Engine
from tokfuse_rt.outputs import TEMP_SUFFIX

av = pytest.importorskip("av")

from video_cases import clip_dir, decode, decode_planes, psnr, small_frames, write_video

W, H = 64, 48


@pytest.fixture(scope="module")
def eng(tiny_ckpt):
    old = torch.get_num_threads()
    with Engine(tiny_ckpt, device="cpu", threads=1) as e:
        yield e
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def real(shared_data):
    """20 real infrared / visible frames at 64x48."""
    return small_frames(shared_data, "ir.mp4"), small_frames(shared_data, "vis.mp4")


@pytest.fixture()
def good(real, tmp_path):
    ir, vis = real
    return write_video(tmp_path / "ir.mp4", ir), write_video(tmp_path / "vis.mp4", vis)


def leftovers(d):
    return sorted(p.name for p in d.iterdir() if ".tmp" in p.name or p.name.endswith(TEMP_SUFFIX))


def fuse(eng, ir, vis, out, **kw):
    return eng.fuse_video(ir, vis, out, progress=False, **kw)


def test_missing_directory_empty_and_non_video_files(eng, good, tmp_path):
    ir, vis = good
    out = tmp_path / "out.mp4"
    with pytest.raises(FileNotFoundError, match="ir: file not found"):
        fuse(eng, tmp_path / "nope.mp4", vis, out)
    with pytest.raises(FileNotFoundError, match="vis: file not found"):
        fuse(eng, ir, tmp_path / "nope.mp4", out)
    with pytest.raises(ValueError, match="vis: .* is a directory"):
        fuse(eng, ir, tmp_path, out)
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(ValueError, match="ir: file is empty"):
        fuse(eng, tmp_path / "empty.mp4", vis, out)
    (tmp_path / "notes.mp4").write_text("not a video at all\n" * 50)
    with pytest.raises(ValueError, match="vis: not a readable video file"):
        fuse(eng, ir, tmp_path / "notes.mp4", out)
    with pytest.raises(TypeError, match="ir: expected a video file path"):
        fuse(eng, b"ir.mp4", vis, out)
    with pytest.raises(ValueError, match="unsupported extension"):
        fuse(eng, ir, vis, tmp_path / "out.avi")
    with pytest.raises(ValueError, match="is the vis input file"):
        fuse(eng, ir, vis, vis)
    assert not out.exists() and leftovers(tmp_path) == []


def test_truncated_files(eng, real, shared_data, tmp_path):
    ir, vis = real
    out = tmp_path / "out.mp4"
    # the real clip cut in half: its index (moov, at the end) is gone -> not readable
    data = (clip_dir(shared_data) / "vis.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="vis: not a readable video file"):
        fuse(eng, clip_dir(shared_data) / "ir.mp4", tmp_path / "cut.mp4", out)
    # index first (faststart), media cut at 60%: the decodable frames are fused and the cut is reported
    full = write_video(
        tmp_path / "fs.mp4", vis, container_options={"movflags": "faststart"}, options={"crf": "30", "g": "4"}
    )
    b = full.read_bytes()
    (tmp_path / "fs_cut.mp4").write_bytes(b[: int(len(b) * 0.6)])
    irf = write_video(tmp_path / "ir.mp4", ir)
    rep = fuse(eng, irf, tmp_path / "fs_cut.mp4", out)
    assert 0 < rep.frames < 20 and decode(out)[1]["frames"] == rep.frames
    assert any("vis:" in w and ("truncated" in w) for w in rep.warnings), rep.warnings
    assert leftovers(tmp_path) == []


def test_no_video_stream_and_zero_frames(eng, good, tmp_path):
    ir, vis = good
    out = tmp_path / "out.mp4"
    audio = tmp_path / "audio.mp4"
    with av.open(str(audio), "w") as c:
        a = c.add_stream("aac", rate=44100)
        for i in range(10):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            f.sample_rate, f.pts = 44100, i * 1024
            for p in a.encode(f):
                c.mux(p)
        for p in a.encode():
            c.mux(p)
    with pytest.raises(ValueError, match=r"ir: .*audio\.mp4 has no video stream \(streams: audio\)"):
        fuse(eng, audio, vis, out)
    empty = tmp_path / "empty.avi"
    with av.open(str(empty), "w", format="avi") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        c.start_encoding()
    assert len(av.open(str(empty)).streams.video) == 1
    with pytest.raises(ValueError, match="vis: .*the video stream has no frames"):
        fuse(eng, ir, empty, out)
    assert not out.exists() and leftovers(tmp_path) == []


def test_different_sizes_need_resize(eng, real, tmp_path):
    ir, vis = real
    from PIL import Image

    big_ir = write_video(tmp_path / "ir.mp4", [np.asarray(Image.fromarray(f).resize((2 * W, 2 * H))) for f in ir])
    v = write_video(tmp_path / "vis.mp4", vis)
    out = tmp_path / "out.mp4"
    with pytest.raises(ValueError, match=r"frame sizes differ: ir is 128x96, vis is 64x48.*resize"):
        fuse(eng, big_ir, v, out)
    assert not out.exists()
    rep = fuse(eng, big_ir, v, out, resize=True)
    fo, info = decode(out)
    assert (info["width"], info["height"]) == (W, H) and rep.frames == 20
    assert any("resized to 64x48" in w for w in rep.warnings)
    # the infrared frames were scaled down: the output is close to fusing the original small pair
    fi, _ = decode(tmp_path / "ir.mp4")
    fv, _ = decode(v)
    assert psnr(fo[5], eng.fuse(np.asarray(Image.fromarray(fi[5]).resize((W, H), Image.BOX)), fv[5])) > 25


def test_different_lengths_fuse_the_overlap(eng, real, tmp_path):
    ir, vis = real
    out = tmp_path / "out.mp4"
    rep = fuse(eng, write_video(tmp_path / "ir.mp4", ir[:12]), write_video(tmp_path / "vis.mp4", vis), out)
    assert rep.frames == 12 == decode(out)[1]["frames"]
    assert rep.sync["vis_after"] == 8 and any("different lengths" in w for w in rep.warnings)
    rep = fuse(eng, write_video(tmp_path / "ir2.mp4", ir), write_video(tmp_path / "vis2.mp4", vis[:7]), out)
    assert rep.frames == 7 and rep.sync["ir_after"] == 13 and any("different lengths" in w for w in rep.warnings)
    # infrared starting 5 frames late: visible frames 0..4 are outside the overlap; the output keeps
    # the visible timeline (its first frame is visible frame 5)
    late = write_video(tmp_path / "late.mp4", ir[:10], pts_offset=5)
    rep = fuse(eng, late, tmp_path / "vis.mp4", out)
    _, info = decode(out)
    assert rep.frames == 10 and rep.sync["vis_before"] == 5 and rep.sync["vis_after"] == 5
    # (FFmpeg's MP4 muxer stores a stream that starts late 10/15360 s early, for input and output alike)
    assert info["pts"][0] * info["time_base"] == pytest.approx(5 / 30, abs=1 / 60)
    # no overlap at all: an error after decoding both, and nothing written
    out.unlink()
    never = write_video(tmp_path / "never.mp4", ir[:5], pts_offset=600)
    with pytest.raises(ValueError, match="do not overlap in time"):
        fuse(eng, never, tmp_path / "vis.mp4", out)
    assert not out.exists() and leftovers(tmp_path) == []


def test_different_rates_duplicate_infrared_frames(eng, real, tmp_path):
    ir, vis = real
    rep = fuse(
        eng,
        write_video(tmp_path / "ir.mp4", ir[:10], fps=15),
        write_video(tmp_path / "vis.mp4", vis),
        tmp_path / "out.mp4",
    )
    assert rep.frames == 20 and rep.sync["ir_duplicated"] == 10 and rep.rate == 30
    assert any("duplicated" in w for w in rep.warnings)


def test_odd_frame_size_is_padded(eng, real, tmp_path):
    ir, vis = real
    odd_ir, odd_vis = [f[:47, :63] for f in ir], [f[:47, :63] for f in vis]
    # FFV1 in Matroska keeps the odd size (H.264 4:2:0 could not)
    a = write_video(tmp_path / "ir.mkv", odd_ir, codec="ffv1", pix_fmt="yuv444p")
    b = write_video(tmp_path / "vis.mkv", odd_vis, codec="ffv1", pix_fmt="yuv444p")
    assert decode(a)[1]["width"] == 63
    out = tmp_path / "out.mp4"
    rep = fuse(eng, a, b, out, crf=0)
    assert (rep.width, rep.height) == (63, 47) and rep.output_size == (64, 48)
    assert any("odd frame size 63x47 padded to 64x48" in w for w in rep.warnings)
    fo, info = decode(out)
    assert (info["width"], info["height"]) == (64, 48) and len(fo) == 20
    fa, _ = decode(a)
    fb, _ = decode(b)
    for o, x, y in list(zip(fo, fa, fb))[::6]:
        assert psnr(o[:47, :63], eng.fuse(x, y)) > 30  # 4:2:0 output of a 4:4:4 input: chroma loss only
    y_planes = decode_planes(out)
    np.testing.assert_array_equal(y_planes[0][0][47], y_planes[0][0][46])  # padding repeats the edge
    np.testing.assert_array_equal(y_planes[0][0][:, 63], y_planes[0][0][:, 62])


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotated_streams_are_fused_upright(eng, real, tmp_path, rotation):
    ir, vis = real
    a = write_video(tmp_path / "ir.mp4", ir, rotation=rotation)
    b = write_video(tmp_path / "vis.mp4", vis, rotation=rotation)
    c = av.open(str(b))
    assert next(c.decode(video=0)).rotation % 360 == rotation % 360  # the display matrix is there
    c.close()
    out = tmp_path / "out.mp4"
    rep = fuse(eng, a, b, out, crf=0)
    q = (rotation // 90) % 4  # counter-clockwise quarter turns
    exp_size = (H, W) if q % 2 else (W, H)
    assert (rep.width, rep.height) == exp_size and rep.vis["rotation"] % 360 == rotation % 360
    fo, info = decode(out)
    assert (info["width"], info["height"]) == exp_size
    fa, _ = decode(a)  # stored (not rotated) frames
    fb, _ = decode(b)
    ref = eng.fuse(np.rot90(fa[3], q), np.rot90(fb[3], q))
    assert psnr(fo[3], ref) > 35 and psnr(fo[3], np.rot90(ref, 2)) < 30  # upright, not upside down


def test_only_one_stream_rotated_is_a_size_mismatch(eng, real, tmp_path):
    ir, vis = real
    a = write_video(tmp_path / "ir.mp4", ir)
    b = write_video(tmp_path / "vis.mp4", vis, rotation=90)
    with pytest.raises(ValueError, match="ir is 64x48, vis is 48x64 \\(upright\\)"):
        fuse(eng, a, b, tmp_path / "out.mp4")


def test_failure_keeps_an_existing_output(eng, real, tmp_path):
    ir, vis = real
    out = tmp_path / "out.mp4"
    out.write_bytes(b"previous result")
    never = write_video(tmp_path / "never.mp4", ir[:5], pts_offset=600)
    with pytest.raises(ValueError, match="do not overlap"):
        fuse(eng, never, write_video(tmp_path / "vis.mp4", vis), out)
    assert out.read_bytes() == b"previous result" and leftovers(tmp_path) == []
    with pytest.raises(ValueError, match="crf"):
        fuse(eng, never, tmp_path / "vis.mp4", out, crf=99)
    with pytest.raises(ValueError, match="k must be in"):
        fuse(eng, never, tmp_path / "vis.mp4", out, k=999)
    assert out.read_bytes() == b"previous result"


def test_names_with_a_colon_are_local_files_never_ffmpeg_urls(eng, good, tmp_path, monkeypatch):
    """``cam1:12:00.mp4`` in, ``12:00.mp4`` out, and ``file:vis.mp4`` (beside a ``vis.mp4`` that is no
    video): each name is the local file of that name, as the plain names give."""
    import shutil

    ir, vis = good
    ref = tmp_path / "ref.mp4"
    fuse(eng, ir, vis, ref)
    d = tmp_path / "c"
    d.mkdir()
    shutil.copy(ir, d / "cam1:12:00.mp4")
    shutil.copy(vis, d / "file:vis.mp4")
    (d / "vis.mp4").write_text("not a video\n" * 20)  # what FFmpeg's file: protocol would read instead
    monkeypatch.chdir(d)
    fuse(eng, "cam1:12:00.mp4", "file:vis.mp4", "12:00.mp4")
    assert (d / "12:00.mp4").is_file()
    got, want = decode_planes(d / "12:00.mp4"), decode_planes(ref)
    assert len(got) == len(want) and all(np.array_equal(a[0], b[0]) for a, b in zip(got, want))
    assert leftovers(d) == []


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_killed_fuse_video_leaves_no_temporary(tiny_ckpt, good, tmp_path, sig):
    """SIGTERM mid-encode: exit 143 and the temporary removed at once; SIGKILL: the next run removes
    the temporary it left. Never an output file from an unfinished run."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    ir, vis = good
    out = tmp_path / "o" / "fused.mp4"
    code = f"""
import os, signal, sys
import tokfuse_rt.video.avio as avio
from tokfuse_rt.cli import main
real = avio.VideoSink.write
def write(self, *a):
    if self.frames == 3:
        os.kill(os.getpid(), signal.{sig})
    return real(self, *a)
avio.VideoSink.write = write
sys.exit(main(["fuse-video", {str(ir)!r}, {str(vis)!r}, "-o", {str(out)!r}, "-q", "-m", {str(tiny_ckpt)!r}]))
"""
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run(
        [sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(root)), capture_output=True, text=True
    )
    left = sorted(p.name for p in out.parent.iterdir())
    if sig == "SIGTERM":
        assert r.returncode == 143 and "Traceback" not in r.stderr, (r.returncode, r.stderr)
        assert left == [], left
    else:
        assert r.returncode == -signal.SIGKILL and len(left) == 1 and left[0].endswith(TEMP_SUFFIX), left
        with Engine(tiny_ckpt, device="cpu", threads=1) as eng:
            rep = fuse(eng, ir, vis, out)
        assert len(rep.removed_temps) == 1 and sorted(p.name for p in out.parent.iterdir()) == ["fused.mp4"]


def test_report_never_onto_an_input(tiny_ckpt, good, tmp_path, capsys):
    from tokfuse_rt.cli import main

    ir, vis = good
    before = vis.read_bytes()
    code = main(["fuse-video", str(ir), str(vis), "-o", str(tmp_path / "o.mp4"), "--report", str(vis), "-q"])
    assert code == 1 and "is the vis input file" in capsys.readouterr().err
    assert vis.read_bytes() == before and not (tmp_path / "o.mp4").exists()
