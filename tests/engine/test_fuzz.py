"""Bounded, seeded fuzz test: mutated PNG/JPEG/TIFF/BMP/WebP/GIF bytes and headers.

Only the documented exception types may escape ``Engine.fuse`` (ValueError, including
ImageTooLargeError, TypeError, FileNotFoundError), and ``fuse_dir`` always finishes with a report.
CASES cases, seeded; about half a minute here. The pixel limit is lowered to 2 MP so that a mutated
header that claims a large (but allowed) image cannot make a case slow; the limit itself is tested
in test_reading.py.
"""

import io
import json
import struct
import time
import zlib
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from tokfuse_rt import Engine

CASES = 360
SEED = 20261201
ALLOWED = (ValueError, TypeError, FileNotFoundError)


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _bases():
    """Small valid files of every format fuse reads (bytes, extension)."""
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (20, 24), dtype=np.uint8)
    rgb = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    out = []

    def save(im, fmt, ext, **kw):
        b = io.BytesIO()
        im.save(b, format=fmt, **kw)
        out.append((b.getvalue(), ext))

    save(Image.fromarray(gray), "PNG", ".png")
    save(Image.fromarray(rgb), "PNG", ".png")
    save(Image.fromarray(gray.astype(np.uint16) * 16), "PNG", ".png")
    save(Image.fromarray(rgb).convert("P"), "PNG", ".png")
    save(Image.fromarray(rgb), "JPEG", ".jpg", quality=90)
    save(Image.fromarray(rgb), "JPEG", ".jpg", quality=90, progressive=True)
    save(Image.fromarray(gray), "TIFF", ".tif")
    save(Image.fromarray(rgb), "TIFF", ".tif", compression="tiff_deflate")
    save(Image.fromarray(gray.astype(np.float32) / 255), "TIFF", ".tif")
    save(Image.fromarray(gray), "TIFF", ".tif", save_all=True, append_images=[Image.fromarray(gray)])
    save(Image.fromarray(rgb), "BMP", ".bmp")
    save(Image.fromarray(rgb), "WEBP", ".webp", quality=80)
    save(Image.fromarray(rgb).convert("P"), "GIF", ".gif")
    return out


def _png_set_size(data: bytes, w: int, h: int) -> bytes:
    """Rewrite the IHDR width/height of a PNG and fix its CRC (a header that lies)."""
    i = data.index(b"IHDR")
    body = struct.pack(">II", w, h) + data[i + 12 : i + 4 + 13]
    chunk = b"IHDR" + body
    return data[:i] + chunk + struct.pack(">I", zlib.crc32(chunk) & 0xFFFFFFFF) + data[i + 4 + 13 + 4 :]


def _mutate(data: bytes, rng) -> bytes:
    b = bytearray(data)
    op = rng.integers(0, 7)
    if op == 0:  # flip a few bits anywhere
        for _ in range(rng.integers(1, 9)):
            i = rng.integers(0, len(b))
            b[i] ^= 1 << int(rng.integers(0, 8))
    elif op == 1:  # overwrite header bytes
        for _ in range(rng.integers(1, 5)):
            i = rng.integers(0, min(64, len(b)))
            b[i] = int(rng.integers(0, 256))
    elif op == 2:  # truncate
        b = b[: rng.integers(0, len(b))]
    elif op == 3:  # insert random bytes
        i = rng.integers(0, len(b))
        b[i:i] = rng.integers(0, 256, rng.integers(1, 64), dtype=np.uint8).tobytes()
    elif op == 4:  # delete a block
        i = rng.integers(0, len(b))
        del b[i : i + int(rng.integers(1, 64))]
    elif op == 5 and data[:4] == b"\x89PNG":  # a header that lies about the size
        w, h = (int(v) for v in rng.choice([0, 1, 15, 24, 25, 3000, 70000, 2**31 - 1], 2))
        return _png_set_size(data, w, h)
    else:  # overwrite 4-byte integers (sizes, offsets, counts)
        for _ in range(rng.integers(1, 4)):
            i = rng.integers(0, max(1, len(b) - 4))
            b[i : i + 4] = struct.pack("<I", int(rng.choice([0, 1, 2**16, 2**31 - 1, 2**32 - 1])))
    return bytes(b)


def test_fuzzed_files_raise_only_documented_errors(tiny_ckpt, tmp_path):
    rng = np.random.default_rng(SEED)
    bases = _bases()
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(good)
    outcomes = Counter()
    t0 = time.perf_counter()
    with Engine(tiny_ckpt, max_pixels=2_000_000, threads=1) as eng:  # tiny images: one thread is fastest
        for case in range(CASES):
            data, ext = bases[case % len(bases)]
            p = tmp_path / f"case{case}{ext}"
            p.write_bytes(_mutate(data, rng))
            args = (p, good) if case % 2 else (good, p)
            try:
                out = eng.fuse(*args)
                assert out.dtype == np.uint8 and out.shape[:2] == (20, 24)
                outcomes["fused"] += 1
            except ALLOWED as e:
                outcomes[type(e).__name__] += 1
            except Exception as e:  # noqa: BLE001 - the failure this test exists to catch
                pytest.fail(f"case {case} ({ext}): {type(e).__name__} escaped Engine.fuse: {e}")
    # the mutations reach both outcomes: some files still decode, many are refused
    assert outcomes["fused"] > CASES // 20 and outcomes["ValueError"] > CASES // 4, outcomes
    assert time.perf_counter() - t0 < 120


def test_fuse_dir_over_fuzzed_files_always_finishes_with_a_report(tiny_ckpt, tmp_path):
    rng = np.random.default_rng(SEED + 1)
    bases = _bases()
    ird, visd = tmp_path / "ir", tmp_path / "vi"
    ird.mkdir(), visd.mkdir()
    n = 60
    for i in range(n):
        data, ext = bases[i % len(bases)]
        (ird / f"{i:03d}{ext}").write_bytes(_mutate(data, rng))
        (visd / f"{i:03d}{ext}").write_bytes(data if i % 3 else _mutate(data, rng))
    with Engine(tiny_ckpt, max_pixels=2_000_000, threads=1) as eng:  # tiny images: one thread is fastest
        rep = eng.fuse_dir(ird, visd, tmp_path / "out", progress=False)
    assert len(rep.written) + len(rep.failed) == n and rep.failed and rep.written
    d = json.loads((tmp_path / "out" / "tokfuse-report.json").read_text())
    assert d["counts"]["fused"] == len(rep.written) and d["counts"]["failed"] == len(rep.failed)
    assert all(isinstance(f["reason"], str) and "\n" not in f["reason"] for f in d["failed"])
