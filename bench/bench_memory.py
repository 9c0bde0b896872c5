"""Peak memory of every path on large inputs, each in a fresh process (the bundled model, CPU).

    python bench/bench_memory.py [--cases fuse,ray,serve3000,serve8000,video] [--out results.json]

Cases (inputs: the first MSRS test pair upscaled bilinearly, infrared gray, visible RGB):

- ``fuse``: ``tokfuse fuse`` on an 8000x6000 pair; the child's peak RSS from ``os.wait4``.
- ``ray``: ``tokfuse fuse-dir --ray local --actors 1`` on one 8000x6000 pair (the bundled model exported
  to ONNX with its halves, shipped to the actor); the peak RSS (``VmHWM``) of the Ray worker processes.
- ``serve3000`` / ``serve8000``: ``tokfuse serve --ray local`` (limits raised to admit the pair), one
  POST /fuse of a 3000x3000 / 8000x6000 pair over HTTP; the peak RSS (``VmHWM``) of the replica process.
- ``video``: ``tokfuse fuse-video`` on two 4096x3072 videos of 8 frames; the child's peak RSS.

Ray processes are found as descendants of the command's process and sampled every 0.2 s (``VmHWM`` is
the kernel's own high-water mark, so sampling misses nothing but processes that exit between samples).
The ceiling is 1.5 GiB for each. Timings are as noisy as the machine is busy.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))  # also when run as a script
from workspace import descendants

ROOT = Path(__file__).resolve().parents[1]
LIMIT_MIB = 1536
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def _pair(d: Path, size) -> tuple[Path, Path]:
    from PIL import Image
    from workspace import find_shared_data

    from tokfuse_rt.pairing import pair_set

    data = find_shared_data(start=ROOT)
    if data is None:
        raise SystemExit("shared/data not found beside the repository (set TOKFUSE_SHARED)")
    first = pair_set(data / "test" / "MSRS").pairs[0]
    (d / "ir").mkdir(parents=True, exist_ok=True)
    (d / "vi").mkdir(parents=True, exist_ok=True)
    out = []
    for sub, src, mode in (("ir", first.ir, "L"), ("vi", first.vis, "RGB")):
        with Image.open(src) as im:
            p = d / sub / "x.png"
            im.convert(mode).resize(size, Image.BILINEAR).save(p, compress_level=1)
            out.append(p)
    return out[0], out[1]


def _hwm(pid: int) -> tuple[str, int]:
    """(command line, VmHWM in KiB) of ``pid`` ('', 0 if gone)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return cmd, int(line.split()[1])
    except OSError:
        pass
    return "", 0


class Sampler(threading.Thread):
    """Highest VmHWM per matching process among the descendants of ``pid``, sampled until stopped."""

    def __init__(self, pid: int, match: str):
        super().__init__(daemon=True)
        self.pid, self.match, self.peaks, self.done = pid, match, {}, threading.Event()

    def run(self):
        while not self.done.is_set():
            for p in descendants(self.pid):
                cmd, kib = _hwm(p)
                if self.match in cmd:
                    self.peaks[p] = max(self.peaks.get(p, 0), kib)
            time.sleep(0.2)

    def peak_mib(self) -> float:
        return max(self.peaks.values(), default=0) / 1024


def _wait4(cmd) -> tuple[int, float, str]:
    p = subprocess.Popen(cmd, env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    return os.waitstatus_to_exitcode(status), usage.ru_maxrss / 1024, err


def case_fuse(d: Path) -> dict:
    ir, vis = _pair(d / "p8000", (8000, 6000))
    t = time.perf_counter()
    rc, peak, err = _wait4([sys.executable, "-m", "tokfuse_rt", "fuse", str(ir), str(vis), "-o", str(d / "f.png")])
    return {"rc": rc, "peak_rss_mib": round(peak, 1), "seconds": round(time.perf_counter() - t, 1), "err": err[-300:]}


def case_ray(d: Path) -> dict:
    ir, _ = _pair(d / "p8000", (8000, 6000))
    cmd = [
        sys.executable,
        "-m",
        "tokfuse_rt",
        "fuse-dir",
        "--ir",
        str(ir.parent),
        "--vis",
        str(ir.parent.parent / "vi"),
    ]
    cmd += ["-o", str(d / "ray_out"), "--ray", "local", "--actors", "1", "-q"]
    t = time.perf_counter()
    p = subprocess.Popen(cmd, env=ENV, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    s = Sampler(p.pid, "ray::")
    s.start()
    out = p.stdout.read()
    rc = p.wait()
    s.done.set()
    s.join()
    return {
        "rc": rc,
        "peak_rss_mib": round(s.peak_mib(), 1),
        "seconds": round(time.perf_counter() - t, 1),
        "out": out[-300:],
    }


def _free_port() -> int:
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        return so.getsockname()[1]


def case_serve(d: Path, size) -> dict:
    import httpx

    ir, vis = _pair(d / f"p{size[0]}", size)
    port = _free_port()
    cmd = [sys.executable, "-m", "tokfuse_rt", "serve", "--port", str(port), "--ray", "local"]
    cmd += ["--max-pixels", "60000000", "--max-body-mb", "400", "--read-timeout-s", "60"]
    p = subprocess.Popen(cmd, env=ENV, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 600:
            line = p.stdout.readline()
            if line.startswith("tokfuse serve: http://") or (not line and p.poll() is not None):
                break
        threading.Thread(target=p.stdout.read, daemon=True).start()
        s = Sampler(p.pid, "ServeReplica")
        s.start()
        time.sleep(2)
        idle = s.peak_mib()
        t = time.perf_counter()
        files = {"ir": ("ir.png", ir.read_bytes()), "vis": ("vis.png", vis.read_bytes())}
        r = httpx.post(f"http://127.0.0.1:{port}/fuse", files=files, timeout=1800)
        sec = time.perf_counter() - t
        time.sleep(1)
        s.done.set()
        s.join()
        return {
            "status": r.status_code,
            "body": r.text[:200] if r.status_code != 200 else f"{len(r.content)} bytes PNG",
            "replica_idle_mib": round(idle, 1),
            "peak_rss_mib": round(s.peak_mib(), 1),
            "seconds": round(sec, 1),
        }
    finally:
        p.terminate()
        p.wait(timeout=120)


def case_video(d: Path) -> dict:
    import numpy as np

    sys.path.insert(0, str(ROOT / "tests"))
    from video_cases import write_video

    ir, vis = _pair(d / "p4096", (4096, 3072))
    from PIL import Image

    frames = {n: np.asarray(Image.open(p)) for n, p in (("ir", ir), ("vis", vis))}
    paths = {}
    for n, a in frames.items():
        rgb = np.repeat(a[..., None], 3, 2) if a.ndim == 2 else a
        paths[n] = write_video(d / f"{n}.mp4", [np.roll(rgb, 8 * i, axis=1) for i in range(8)], options={"crf": "23"})
    t = time.perf_counter()
    cmd = [
        sys.executable,
        "-m",
        "tokfuse_rt",
        "fuse-video",
        str(paths["ir"]),
        str(paths["vis"]),
        "-o",
        str(d / "v.mp4"),
    ]
    rc, peak, err = _wait4(cmd + ["-q"])
    return {"rc": rc, "peak_rss_mib": round(peak, 1), "seconds": round(time.perf_counter() - t, 1), "err": err[-300:]}


CASES = {
    "fuse": case_fuse,
    "ray": case_ray,
    "serve3000": lambda d: case_serve(d, (3000, 3000)),
    "serve8000": lambda d: case_serve(d, (8000, 6000)),
    "video": case_video,
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    ap.add_argument("--out", default=None, help="also write the results as JSON")
    a = ap.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory(prefix="tokfuse-mem-") as tmp:
        for name in a.cases.split(","):
            r = CASES[name](Path(tmp))
            r["limit_mib"] = LIMIT_MIB
            r["ok"] = r.get("rc", 0) == 0 and r.get("status", 200) == 200 and r["peak_rss_mib"] <= LIMIT_MIB
            results[name] = r
            print(json.dumps({name: r}), flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(results, indent=1) + "\n")
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
