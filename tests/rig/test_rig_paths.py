"""``--align RIG`` on every path: tokfuse fuse, fuse-dir (plain and --ray), fuse-video and tokfuse serve
(deployment-wide rig and a per-request one), each against ``Engine.fuse(..., align=)`` on real pairs
whose infrared image was rendered through a known rig (``tokfuse_rt.rig_synth``)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from tokfuse_rt import Engine
from tokfuse_rt.cli import main
from tokfuse_rt.imageio import load_image
from tokfuse_rt.outputs import save_image
from tokfuse_rt.rig_synth import draw_rig, render_ir

from serve_common import tokfuse_serve
from video_cases import clip_dir, decode, psnr, write_video

pytest.importorskip("cv2", reason="needs the extra tokfuse_rt[rig] (opencv-python-headless)")
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def rig_pairs(shared_data, tmp_path_factory):
    """Folders ir/ (camera images of 2 RoadScene scenes through one rig; the scenes share a visible
    size after a crop) and vis/, and the rig file."""
    root = tmp_path_factory.mktemp("rigpairs")
    d = shared_data / "test" / "RoadScene"
    names = sorted(p.stem for p in (d / "ir").iterdir())[:2]
    vis = [load_image(next((d / "vi").glob(n + ".*")), "vis") for n in names]
    irs = [load_image(next((d / "ir").glob(n + ".*")), "ir") for n in names]
    h, w = min(v.shape[0] for v in vis), min(v.shape[1] for v in vis)
    rig = draw_rig((w, h), np.random.default_rng(11))
    (root / "ir").mkdir()
    (root / "vis").mkdir()
    for n, v, i in zip(names, vis, irs):
        save_image(render_ir(i[:h, :w], rig), root / "ir" / f"{n}.png")
        save_image(v[:h, :w], root / "vis" / f"{n}.png")
    return root, rig.save(root / "rig.json"), rig, names


@pytest.fixture(scope="module")
def eng(tiny_ckpt):
    with Engine(tiny_ckpt, device="cpu", threads=1) as e:
        yield e


def test_cli_fuse_and_fuse_dir_with_align(rig_pairs, eng, tiny_ckpt, tmp_path, capsys):
    root, rig_path, rig, names = rig_pairs
    ir, vis = root / "ir" / f"{names[0]}.png", root / "vis" / f"{names[0]}.png"
    ref = eng.fuse(ir, vis, align=rig)
    assert ref.shape[:2] == (rig.vis_size[1], rig.vis_size[0])
    out = tmp_path / "f.png"
    model = ["--model", str(tiny_ckpt), "--device", "cpu", "--threads", "1"]
    assert main(["fuse", str(ir), str(vis), "-o", str(out), "--align", str(rig_path), *model]) == 0
    assert np.array_equal(np.asarray(Image.open(out)), ref)
    # without the rig the pair is refused, pointing at --align; nothing written
    out2 = tmp_path / "g.png"
    assert main(["fuse", str(ir), str(vis), "-o", str(out2), *model]) == 1
    assert "--align" in capsys.readouterr().err and not out2.exists()
    od = tmp_path / "dir"
    args = ["fuse-dir", "--ir", str(root / "ir"), "--vis", str(root / "vis"), "-o", str(od), "-q"]
    assert main([*args, "--align", str(rig_path), *model]) == 0
    for n in names:
        want = eng.fuse(root / "ir" / f"{n}.png", root / "vis" / f"{n}.png", align=rig)
        assert np.array_equal(np.asarray(Image.open(od / f"{n}.png")), want)


def test_fuse_dir_ray_with_align(rig_pairs, tiny_onnx, tmp_path):
    ray = pytest.importorskip("ray", reason="needs the extra tokfuse_rt[ray]")
    pytest.importorskip("ray.data")
    from tokfuse_rt.serving.batch import fuse_dir_ray

    root, rig_path, rig, names = rig_pairs
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        rep = fuse_dir_ray(
            root / "ir", root / "vis", tmp_path / "o", model=tiny_onnx, actors=1, progress=False, align=rig_path
        )
    finally:
        ray.shutdown()
    assert len(rep.written) == 2 and not rep.failed
    with Engine(tiny_onnx, threads=1, align=rig_path) as e:
        for n in names:
            want = e.fuse(root / "ir" / f"{n}.png", root / "vis" / f"{n}.png")
            assert np.array_equal(np.asarray(Image.open(tmp_path / "o" / f"{n}.png")), want)


def test_fuse_video_with_align_other_size_and_rate(shared_data, tiny_onnx, tmp_path, capsys):
    """A 640x480 visible video at 30 fps and an infrared one of another size at 20 fps (rendered through
    a rig): the output has the visible size and frame count; each frame is Engine.fuse of the
    decoded frames with the rig (the infrared frame nearest in time: j = round(i * 2 / 3), never a tie),
    up to the limited-range luma and the RGB decode (> 35 dB, while a 1 px shift costs far more)."""
    d = clip_dir(shared_data)
    vis_frames, _ = decode(d / "vis.mp4")
    ir_src, _ = decode(d / "ir.mp4", "gray")
    rig = draw_rig((640, 480), np.random.default_rng(5), ir_width=(320, 480))
    ir_frames = [render_ir(ir_src[min(19, round(1.5 * j))], rig) for j in range(14)]
    ir_v = write_video(tmp_path / "ir.mp4", ir_frames, fps=20)
    vis_v = tmp_path / "vis.mp4"
    vis_v.write_bytes((d / "vis.mp4").read_bytes())
    rig_path = rig.save(tmp_path / "rig.json")
    out = tmp_path / "out.mp4"
    args = ["fuse-video", str(ir_v), str(vis_v), "-o", str(out), "--model", str(tiny_onnx), "--threads", "1"]
    assert main([*args, "--reuse", "off", "--crf", "0", "-q"]) == 1  # different sizes, no rig
    assert "--align" in capsys.readouterr().err and not out.exists()
    assert main([*args, "--reuse", "off", "--crf", "0", "-q", "--align", str(rig_path)]) == 0
    fo, _ = decode(out)
    ir_dec, _ = decode(ir_v)
    assert len(fo) == 20 and fo[0].shape == (480, 640, 3)
    with Engine(tiny_onnx, threads=1) as e:
        for i in (0, 7, 19):
            ref = e.fuse(ir_dec[round(i * 2 / 3)], vis_frames[i], align=rig)
            assert psnr(fo[i], ref) > 35.0, i


def _png(arr) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_serve_with_deployment_and_request_rigs(rig_pairs, tiny_onnx, shared_data, tmp_path):
    ray = pytest.importorskip("ray", reason="needs the extra tokfuse_rt[ray]")
    pytest.importorskip("ray.serve")
    httpx = pytest.importorskip("httpx")
    root, rig_path, rig, names = rig_pairs
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    args = ["--replicas", "1", "--align", str(rig_path)]
    try:
        with tokfuse_serve(tiny_onnx, args, ray_address=ray.get_runtime_context().gcs_address) as url:
            ir_b = (root / "ir" / f"{names[0]}.png").read_bytes()
            vis_b = (root / "vis" / f"{names[0]}.png").read_bytes()

            def post(ir, vis, rig_part=None):
                files = {"ir": ("ir.png", ir), "vis": ("vis.png", vis)}
                data = {"rig": rig_part} if rig_part is not None else None
                return httpx.post(f"{url}/fuse", files=files, data=data, timeout=120)

            with Engine(tiny_onnx, threads=1) as e:
                r = post(ir_b, vis_b)
                assert r.status_code == 200, r.text
                want = e.fuse(root / "ir" / f"{names[0]}.png", root / "vis" / f"{names[0]}.png", align=rig)
                assert np.array_equal(np.asarray(Image.open(io.BytesIO(r.content))), want)
                # a per-request rig for another camera pair wins over the deployment's
                d = shared_data / "test" / "MSRS"
                ir2 = load_image(sorted((d / "ir").iterdir())[0], "ir")
                vis2 = load_image(sorted((d / "vi").iterdir())[0], "vis")
                rig2 = draw_rig((vis2.shape[1], vis2.shape[0]), np.random.default_rng(2))
                cam2 = render_ir(ir2, rig2)
                r = post(_png(cam2), _png(vis2), json.dumps(rig2.to_dict()))
                assert r.status_code == 200, r.text
                assert np.array_equal(np.asarray(Image.open(io.BytesIO(r.content))), e.fuse(cam2, vis2, align=rig2))
            # the deployment's rig does not fit these sizes; a bad rig part: 400 with a JSON reason
            r = post(_png(cam2), _png(vis2))
            assert r.status_code == 400 and "but the rig" in r.json()["error"]
            bad = rig2.to_dict()
            bad["matrix"] = [[1, 2, 0], [2, 4, 0], [0, 0, 1]]
            r = post(_png(cam2), _png(vis2), json.dumps(bad))
            assert r.status_code == 400 and "singular" in r.json()["error"]
            r = post(_png(cam2), _png(vis2), "{oops")
            assert r.status_code == 400 and "not JSON" in r.json()["error"]
    finally:
        ray.shutdown()
