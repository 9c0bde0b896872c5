"""``fuse_dir_ray`` / ``tokfuse fuse-dir --ray`` on a real local Ray instance: outputs equal ``Engine.fuse``
bit for bit, names, formats, quality, report and resume as
``Engine.fuse_dir``, bad pairs and ambiguous stems reported, --overwrite, an actor killed mid-job, a
driver killed mid-job and re-run. One Ray instance (2 logical
CPUs) serves the whole module; the tiny session model keeps each job to a few seconds."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ray = pytest.importorskip("ray", reason="needs the extra tokfuse_rt[ray]")
pytest.importorskip("ray.data", reason="needs ray[data]")
pytest.importorskip("onnxruntime")

from tokfuse_rt import Engine
from tokfuse_rt.jobs import REPORT_NAME
from tokfuse_rt.outputs import TEMP_SUFFIX
from tokfuse_rt.pairing import pair_dirs
from tokfuse_rt.serving.batch import ATTEMPTS_DIR, AttemptGuard, PairFuser, fuse_dir_ray
from tokfuse_rt.serving.cluster import ModelBlob, default_onnx

pytestmark = pytest.mark.timeout(600)  # per test, set-up included: a bound for a busy 2-core machine


@pytest.fixture(scope="module")
def ray_address():
    """One local Ray instance for the module (starting one takes ~10 s on 2 cores)."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def tree(shared_data, tmp_path_factory) -> Path:
    """A folder tree of real pairs: 5 RoadScene pairs (sizes differ) at the top, 4 MSRS pairs (all
    640x480, so they share backend calls) in sub/, 2 TNO pairs (gray, the visible one stored as RGB)
    in sub/tno/, one corrupt visible image, one unpaired file, one ambiguous stem in sub/ (amb.png and
    amb.bmp with amb.jpg: reported, not fused)."""
    root = tmp_path_factory.mktemp("tree")
    for side, src in (("ir", "ir"), ("vis", "vi")):
        (root / side / "sub" / "tno").mkdir(parents=True)
        for p in sorted((shared_data / "test/RoadScene" / src).iterdir())[:5]:
            shutil.copy(p, root / side / p.name)
        for p in sorted((shared_data / "test/MSRS" / src).iterdir())[:4]:
            shutil.copy(p, root / side / "sub" / p.name)
        for p in sorted((shared_data / "test/TNO" / src).iterdir())[:2]:
            shutil.copy(p, root / side / "sub" / "tno" / p.name)
    shutil.copy(root / "ir" / "sub" / sorted(os.listdir(root / "ir" / "sub"))[0], root / "ir" / "bad.png")
    (root / "vis" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    shutil.copy(root / "ir" / "sub" / sorted(os.listdir(root / "ir" / "sub"))[0], root / "ir" / "only_ir.png")
    first = sorted(p for p in (root / "ir" / "sub").iterdir() if p.is_file())[0]
    Image.open(first).save(root / "ir" / "sub" / "amb.png")
    Image.open(first).save(root / "ir" / "sub" / "amb.bmp")
    Image.open(next((root / "vis" / "sub").glob(first.stem + ".*"))).convert("RGB").save(
        root / "vis" / "sub" / "amb.jpg"
    )
    return root


def _good_pairs(tree: Path) -> dict:
    """{output name relative to OUT: (ir path, vis path)} for every good pair of ``tree``."""
    out = {}
    for ir in sorted((tree / "ir").rglob("*")):
        rel = ir.relative_to(tree / "ir")
        if ir.is_file() and rel.name not in ("bad.png", "only_ir.png") and rel.stem != "amb":
            vis = next((tree / "vis" / rel.parent).glob(rel.stem + ".*"))
            out[str(rel.parent / (rel.stem + ".png"))] = (ir, vis)
    return out


def _listing(out: Path) -> set:
    return {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}


def _assert_outputs_exact(out: Path, tree: Path, model) -> None:
    """Every output present once, no partial file, each equal to Engine.fuse on its pair."""
    expect = _good_pairs(tree)
    assert _listing(out) == set(expect) | {REPORT_NAME}
    with Engine(model) as eng:
        for name, (ir, vis) in expect.items():
            got = np.asarray(Image.open(out / name))
            ref = eng.fuse(ir, vis)
            assert got.shape == ref.shape and got.dtype == ref.dtype, name
            assert np.array_equal(got, ref), f"{name}: differs from Engine.fuse"


def _stamps(out: Path) -> dict:
    """{file relative to OUT: (inode, mtime)}, temporaries and attempt counters included."""
    return {n: ((out / n).stat().st_ino, (out / n).stat().st_mtime_ns) for n in _listing(out) if n != REPORT_NAME}


def test_matches_engine_names_report_and_resume(ray_address, tree, tiny_onnx, tmp_path):
    out = tmp_path / "out"
    rep = fuse_dir_ray(
        tree / "ir", tree / "vis", out, model=tiny_onnx, actors=2, batch_size=3, progress=False, recursive=True
    )
    assert (len(rep.written), len(rep.skipped), rep.unpaired) == (11, 0, ["ir/only_ir.png"])
    assert [n for n, _ in rep.failed] == ["bad.png"] and "vis" in rep.failed[0][1]
    assert [s for s, _ in rep.ambiguous] == ["sub/amb"] and "amb.bmp, amb.png" in rep.ambiguous[0][1]
    _assert_outputs_exact(out, tree, tiny_onnx)
    assert rep.summary().startswith("11 fused, 1 failed, 1 unpaired, 0 already done, 1 ambiguous in ")

    # same names, bytes and report keys as the plain Engine.fuse_dir on the flat top folder
    plain = tmp_path / "plain"
    with Engine(tiny_onnx) as eng:
        plain_rep = eng.fuse_dir(tree / "ir", tree / "vis", plain, progress=False)
    top = {n for n in _listing(out) if "/" not in n}
    assert top == _listing(plain)
    assert all((out / n).read_bytes() == (plain / n).read_bytes() for n in top if n != REPORT_NAME)
    report, plain_report = (json.loads((d / REPORT_NAME).read_text()) for d in (out, plain))
    assert set(report) == set(plain_report) | {"ray"}
    assert report["counts"] == {"fused": 11, "failed": 1, "unpaired": 1, "already_done": 0, "ambiguous": 1}
    assert report["failed"] == [{"name": "bad.png", "reason": dict(plain_rep.failed)["bad.png"]}]
    assert (report["backend"], report["k"], report["model"]) == (
        plain_report["backend"],
        plain_report["k"],
        plain_report["model"],
    )
    assert report["ray"]["actors"] == 2 and report["ray"]["worker_processes"] >= 1

    # resume: nothing redone; then a missing and a truncated output are redone, the rest skipped
    before = _stamps(out)
    rep2 = fuse_dir_ray(
        tree / "ir", tree / "vis", out, model=tiny_onnx, actors=2, batch_size=3, progress=False, recursive=True
    )
    assert (len(rep2.written), len(rep2.skipped), len(rep2.failed)) == (0, 11, 1)
    assert _stamps(out) == before
    names = sorted(before)
    (out / names[0]).unlink()
    (out / names[1]).write_bytes((out / names[1]).read_bytes()[:500])
    rep3 = fuse_dir_ray(
        tree / "ir", tree / "vis", out, model=tiny_onnx, actors=1, batch_size=4, progress=False, recursive=True
    )
    assert sorted(str(p.relative_to(out)) for p in rep3.written) == names[:2]
    assert len(rep3.skipped) == 9
    after = _stamps(out)
    assert all(after[n] == before[n] for n in names[2:])
    _assert_outputs_exact(out, tree, tiny_onnx)


def test_cli_overwrite_ext_and_quality_as_plain(ray_address, tree, tiny_onnx, tmp_path, capsys):
    """``--ray`` honours --ext/--quality (bytes equal to plain fuse-dir's) and --overwrite (every
    output written again), and prints plain fuse-dir's summary and exit status (1: a pair failed)."""
    from tokfuse_rt.cli import main

    ray_out, plain = tmp_path / "ray", tmp_path / "plain"
    args = [
        "fuse-dir",
        "--ir",
        str(tree / "ir"),
        "--vis",
        str(tree / "vis"),
        "--model",
        str(tiny_onnx),
        "--ext",
        "JPG",
        "--quality",
        "60",
        "-q",
        "--recursive",
    ]
    assert main([*args, "-o", str(plain)]) == 1
    printed = capsys.readouterr().out
    assert printed.startswith("11 fused, 1 failed, 1 unpaired, 0 already done, 1 ambiguous\n"), printed
    assert main([*args, "-o", str(ray_out), "--ray", ray_address, "--actors", "2"]) == 1
    printed = capsys.readouterr().out
    assert "11 fused, 1 failed, 1 unpaired, 0 already done, 1 ambiguous in " in printed
    made = sorted(str(p.relative_to(plain)) for p in plain.rglob("*.jpg"))
    assert len(made) == 11 and sorted(str(p.relative_to(ray_out)) for p in ray_out.rglob("*.jpg")) == made
    assert all((ray_out / n).read_bytes() == (plain / n).read_bytes() for n in made)
    top_only = tmp_path / "top"  # without --recursive: the top folders only, with or without --ray
    assert main([*args[:-1], "-o", str(top_only), "--ray", ray_address, "--actors", "1"]) == 1
    assert sorted(p.name for p in top_only.rglob("*.jpg")) == sorted(p.name for p in plain.glob("*.jpg"))
    before = _stamps(ray_out)
    assert (
        main([*args, "-o", str(ray_out), "--ray", ray_address, "--overwrite", "--report", str(tmp_path / "r.json")])
        == 1
    )
    after = _stamps(ray_out)
    assert json.loads((tmp_path / "r.json").read_text())["counts"]["fused"] == 11
    assert all(after[n][0] != before[n][0] for n in before if n.endswith(".jpg"))  # each replaced


def test_actors_apply_the_engine_limits_and_output_checks(ray_address, tree, nan_onnx, tmp_path):
    """The Ray path runs each pair through an Engine as plain fuse-dir does: the pixel limit refuses
    every good pair, a model giving NaN fails every pair naming the model, and no output is written."""
    n_good = len(_good_pairs(tree))
    rep = fuse_dir_ray(
        tree / "ir", tree / "vis", tmp_path / "small", model=nan_onnx, max_pixels=300, progress=False, recursive=True
    )
    limit = [m for _, m in rep.failed if "over the limit of" in m]
    assert len(limit) >= n_good and not rep.written, rep.failed  # + bad.png: its ir half is a real image
    rep = fuse_dir_ray(
        tree / "ir", tree / "vis", tmp_path / "nan", model=nan_onnx, actors=1, progress=False, recursive=True
    )
    nan = [m for _, m in rep.failed if "nan.onnx: output 'fused' contains NaN" in m]
    assert len(nan) == n_good and not rep.written, rep.failed  # bad.png fails on decoding
    assert _listing(tmp_path / "nan") == {REPORT_NAME}


def test_actor_killed_mid_job(ray_address, tree, tiny_onnx, tmp_path):
    """An injected hook makes one actor process exit (leaving a half-written temporary file) when it
    is about to write its 2nd output; Ray restarts it and retries its batch. The job completes:
    every output exactly once, whole, equal to Engine.fuse; no temporary file left."""
    from ray_faults import DieWhileWriting, injectable

    marker = tmp_path / "fault-fired"
    out = tmp_path / "out"
    hook = injectable(DieWhileWriting(2, marker))
    rep = fuse_dir_ray(
        tree / "ir",
        tree / "vis",
        out,
        model=tiny_onnx,
        actors=2,
        batch_size=2,
        progress=False,
        before_write=hook,
        recursive=True,
    )
    assert marker.exists(), "the fault hook did not fire"
    dead = int(marker.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(dead, 0)
    assert (len(rep.written), len(rep.skipped), [n for n, _ in rep.failed]) == (11, 0, ["bad.png"])
    # the half-written temporary of the dead actor, removed by the driver
    assert any(p.name.endswith(TEMP_SUFFIX) for p in rep.removed_temps), rep.removed_temps
    _assert_outputs_exact(out, tree, tiny_onnx)


def test_poison_pair_fails_after_max_attempts(ray_address, tree, tiny_onnx, tmp_path):
    """A pair whose worker already died ``max_attempts`` times is reported, not retried again; the
    other pairs of its batch are fused (directly on a PairFuser, in this process)."""
    out = tmp_path / "out"
    pairs = pair_dirs(tree / "ir" / "sub", tree / "vis" / "sub").pairs  # the 4 MSRS pairs
    assert len(pairs) == 4
    outs = [out / (p.stem + ".png") for p in pairs]
    attempts = out / ATTEMPTS_DIR
    guard = AttemptGuard(attempts, 3)
    assert [guard.begin(pairs[1].name) for _ in range(3)] == [0, 1, 2]  # 3 starts, none finished
    fuser = PairFuser(ModelBlob.put(tiny_onnx), attempts_dir=attempts, threads=1, max_attempts=3)
    res = fuser(
        {
            "name": np.array([p.name for p in pairs], dtype=object),
            "ir": np.array([str(p.ir) for p in pairs], dtype=object),
            "vis": np.array([str(p.vis) for p in pairs], dtype=object),
            "out": np.array([str(o) for o in outs], dtype=object),
        }
    )
    assert res["status"] == ["written", "failed", "written", "written"]
    assert "died 3 times" in res["error"][1]
    assert not list(attempts.iterdir()) and not outs[1].exists()
    assert not [p for p in out.iterdir() if p.name.endswith(TEMP_SUFFIX)]
    with Engine(tiny_onnx) as eng:
        assert np.array_equal(np.asarray(Image.open(outs[0])), eng.fuse(pairs[0].ir, pairs[0].vis))


def _cli(*args):
    return [sys.executable, "-m", "tokfuse_rt", "fuse-dir", *map(str, args)]


def test_cli_driver_killed_then_rerun(ray_address, shared_data, tiny_onnx, tmp_path):
    """``tokfuse fuse-dir --ray ADDRESS`` killed (SIGKILL) mid-job, then run again: it completes
    without redoing the pairs that were finished, and leaves no partial file."""
    ir, vis, out = shared_data / "test/RoadScene/ir", shared_data / "test/RoadScene/vi", tmp_path / "out"
    n = len(list(ir.iterdir()))
    cmd = _cli(
        "--ir",
        ir,
        "--vis",
        vis,
        "-o",
        out,
        "--model",
        tiny_onnx,
        "--ray",
        ray_address,
        "--actors",
        1,
        "--batch-size",
        1,
        "-q",
    )
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120 and proc.poll() is None:
        if out.is_dir() and len([p for p in out.glob("*.png") if not p.name.startswith(".")]) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the job ended before it could be interrupted:\n{proc.stdout.read()}"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    prev, stable_since = None, time.monotonic()  # Ray ends the dead driver's actors shortly after
    while time.monotonic() - stable_since < 3.0:
        cur = _stamps(out)
        if cur != prev:
            prev, stable_since = cur, time.monotonic()
        time.sleep(0.2)
    done = {k: v for k, v in prev.items() if not Path(k).name.startswith(".") and not k.startswith(ATTEMPTS_DIR)}
    assert 3 <= len(done) < n, f"{len(done)} of {n} outputs at interruption"

    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{n - len(done)} fused, 0 failed, 0 unpaired, {len(done)} already done" in r.stdout, r.stdout
    after = _stamps(out)
    assert set(after) == {p.stem + ".png" for p in ir.iterdir()}  # all outputs, no partial file
    assert all(after[k] == v for k, v in done.items()), "a finished pair was redone"
    with Engine(tiny_onnx) as eng:
        for p in sorted(ir.iterdir())[:10]:
            assert np.array_equal(np.asarray(Image.open(out / (p.stem + ".png"))), eng.fuse(p, vis / p.name))


def test_cli_refuses_bad_options_before_starting_ray(tree, tiny_onnx, tmp_path, capsys):
    from tokfuse_rt.cli import main

    rc = main(
        [
            "fuse-dir",
            "--ir",
            str(tree / "ir"),
            "--vis",
            str(tree / "vis"),
            "-o",
            str(tree / "ir" / "out"),
            "--ray",
            "-q",
        ]
    )
    assert rc == 1 and "inside the input folder" in capsys.readouterr().err
    rc = main(
        [
            "fuse-dir",
            "--ir",
            str(tree / "ir"),
            "--vis",
            str(tree / "vis"),
            "-o",
            str(tmp_path / "o"),
            "--ray",
            "--actors",
            "0",
            "-q",
        ]
    )
    assert rc == 1 and "actors must be a positive int" in capsys.readouterr().err
    with socket.socket() as s:  # a port with nothing listening: fail fast and clearly
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()  # a fresh process (this one may hold the module's Ray instance)
    r = subprocess.run(
        _cli(
            "--ir",
            tree / "ir",
            "--vis",
            tree / "vis",
            "-o",
            tmp_path / "o",
            "--model",
            tiny_onnx,
            "--ray",
            f"127.0.0.1:{port}",
            "-q",
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1 and "no Ray cluster answers at 127.0.0.1:" in r.stderr, r.stderr
    assert time.monotonic() - t0 < 60


def test_default_model_is_exported_once(tiny_ckpt, tmp_path):
    """No --model: the checkpoint is exported to ONNX once into the cache, then reused."""
    a = default_onnx(tiny_ckpt, cache=tmp_path)
    stamp = a.stat().st_mtime_ns
    b = default_onnx(tiny_ckpt, cache=tmp_path)
    assert a == b and b.stat().st_mtime_ns == stamp and a.suffix == ".onnx"
    with Engine(a) as eng:
        assert eng.info()["backend"] == "onnxruntime"


def test_default_export_leaves_no_orphans_and_keeps_its_halves(tiny_ckpt, tmp_path):
    """The cached default export has its token/render halves beside it (so Ray and serve can tile) and
    leaves no hidden per-process files behind."""
    from tokfuse_rt.onnx_contract import half_paths

    a = default_onnx(tiny_ckpt, cache=tmp_path)
    assert all(p.is_file() for p in half_paths(a).values())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([a.name, *(p.name for p in half_paths(a).values())])
    with Engine(a) as eng:
        assert eng.info()["halves"] == "tokens+render"


def test_model_blob_ignores_a_planted_cache_file_and_ships_the_halves(ray_address, tiny_ckpt, tmp_path):
    """A file planted where a node caches the model (the old shared-temp name, or the new one) never
    runs instead of the model given: the node's copy always has the SHA-256 of the model shipped."""
    import hashlib
    import tempfile

    from tokfuse_rt.onnx_contract import half_paths

    model = default_onnx(tiny_ckpt, cache=tmp_path / "cache")
    blob = ModelBlob.put(model)
    want = hashlib.sha256(model.read_bytes()).hexdigest()
    old = Path(tempfile.gettempdir()) / "tokfuse_rt-models" / f"{want[:16]}-{model.name}"
    old.parent.mkdir(exist_ok=True)
    old.write_bytes(b"planted")
    first = blob.local_path()
    assert hashlib.sha256(first.read_bytes()).hexdigest() == want
    first.chmod(0o644)
    first.write_bytes(b"planted")  # tampered with after the first use
    again = blob.local_path()
    assert hashlib.sha256(again.read_bytes()).hexdigest() == want
    assert all(p.is_file() for p in half_paths(again).values())
    with Engine(again) as eng:
        assert eng.info()["halves"] == "tokens+render"
    old.unlink()
