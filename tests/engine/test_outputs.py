"""tokfuse_rt.outputs: atomic writes, no symlink followed, resume checks, stale temporaries."""

import os
import stat
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tokfuse_rt.outputs import (
    TEMP_SUFFIX,
    atomic_write,
    check_output_dir,
    check_output_ext,
    check_output_path,
    check_quality,
    output_ok,
    remove_stale_temps,
    save_image,
)

IMG = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)


def test_formats_round_trip_and_quality(tmp_path):
    for ext in (".png", ".bmp", ".tif", ".tiff"):
        p = save_image(IMG, tmp_path / f"x{ext}")
        np.testing.assert_array_equal(np.asarray(Image.open(p)), IMG)  # lossless formats
    big = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    sizes = {q: save_image(big, tmp_path / f"q{q}.jpg", quality=q).stat().st_size for q in (30, 95)}
    assert sizes[30] < sizes[95]
    w = {q: save_image(big, tmp_path / f"q{q}.webp", quality=q).stat().st_size for q in (30, 95)}
    assert w[30] < w[95] and Image.open(tmp_path / "q95.webp").format == "WEBP"
    with pytest.raises(ValueError, match=r"output .*fused: unknown image extension '\(none\)'"):
        save_image(IMG, tmp_path / "fused")
    with pytest.raises(ValueError, match="quality must be an int in"):
        check_quality(0)
    assert check_output_ext("JPG") == ".jpg" and check_output_ext(".webp") == ".webp"
    assert check_output_path("a/b.TIFF") == ".tiff"
    with pytest.raises(ValueError, match="unknown output image extension '.gif'"):
        check_output_ext(".gif")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(TEMP_SUFFIX)]


def test_planted_symlink_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").symlink_to(victim)
    save_image(IMG, out / "a.png")
    assert victim.read_text() == "precious"
    assert not (out / "a.png").is_symlink() and output_ok(out / "a.png")


def test_failure_removes_the_temporary_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.png"
    save_image(IMG, target)
    before = target.read_bytes()

    def boom(f):
        f.write(b"half an image")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, boom)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_permissions_follow_the_umask(tmp_path):
    p = save_image(IMG, tmp_path / "a.png")
    old = os.umask(0o022)
    os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~old


def test_output_ok(tmp_path):
    good = save_image(IMG, tmp_path / "good.png")
    assert output_ok(good) and output_ok(good, size=(30, 20)) and not output_ok(good, size=(20, 30))
    trunc = tmp_path / "trunc.png"
    trunc.write_bytes(good.read_bytes()[:-40])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("no image")
    (tmp_path / "link.png").symlink_to(good)
    for n in ("trunc.png", "empty.png", "text.png", "link.png", "missing.png"):
        assert not output_ok(tmp_path / n), n


def test_remove_stale_temps_only_ours_and_only_dead(tmp_path):
    # a temporary left by a killed process: a real process that wrote one and was killed
    code = (
        "import sys, os, signal; from tokfuse_rt.outputs import atomic_write\n"
        "atomic_write(sys.argv[1], lambda f: os.kill(os.getpid(), signal.SIGKILL))"
    )
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "a.png")], capture_output=True)
    assert r.returncode == -9
    left = [p for p in tmp_path.iterdir() if p.name.endswith(TEMP_SUFFIX)]
    assert len(left) == 1 and left[0].name.startswith(".a.png.")
    # one of a live writer (this process), someone else's name pattern, a symlink with our suffix
    live = tmp_path / f".b.png.{left[0].name.split('.')[3]}.{os.getpid()}.xyz{TEMP_SUFFIX}"
    live.write_bytes(b"")
    other = tmp_path / "notes.tokfuse-tmp"
    other.write_bytes(b"")
    (tmp_path / f".c.png.x.1.y{TEMP_SUFFIX}").symlink_to(other)
    assert remove_stale_temps(tmp_path) == [left[0]]
    assert live.exists() and other.exists()


def test_output_folder_inside_an_input_folder_is_refused(tmp_path):
    (tmp_path / "ir").mkdir()
    (tmp_path / "vi").mkdir()
    for bad in (tmp_path / "vi", tmp_path / "vi" / "out", tmp_path / "ir" / "." / "x"):
        with pytest.raises(ValueError, match="input folder"):
            check_output_dir(bad, tmp_path / "ir", tmp_path / "vi")
    (tmp_path / "lnk").symlink_to(tmp_path / "vi")
    with pytest.raises(ValueError, match="input folder"):
        check_output_dir(tmp_path / "lnk", tmp_path / "ir", tmp_path / "vi")
    assert check_output_dir(tmp_path / "out", tmp_path / "ir", tmp_path / "vi") == tmp_path / "out"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        check_output_dir(tmp_path / "file", tmp_path / "ir")
