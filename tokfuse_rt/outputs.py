"""Writing results safely, shared by every writer (``tokfuse fuse``, ``fuse_dir``, batch jobs).

- :func:`atomic_write`: the data go to a temporary file created exclusively (``O_CREAT|O_EXCL|
  O_NOFOLLOW``, unpredictable name, mode 0600 while written) in the target's own folder, are
  flushed to disk, then renamed over the target. A planted symlink is never followed; a failure
  removes the temporary; nothing half-written ever appears under the target name.
- :func:`save_image`: an image through :func:`atomic_write`, format from the extension
  (:data:`WRITE_EXTS`), JPEG/WebP quality selectable.
- :func:`output_ok`: the output exists, is a regular file and decodes (what resuming checks).
- :func:`remove_stale_temps`: temporaries left by killed runs (this project's names only, owned by
  this user, from a process that is gone or older than a day).
- :func:`check_output_ext`, :func:`check_output_path`, :func:`check_output_dir`, :func:`check_quality`,
  :func:`check_not_input`: validate before any work is done (never write onto an input).
"""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import tempfile
import time
from pathlib import Path

import numpy as np

#: Output extension -> Pillow format.
WRITE_EXTS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
}
DEFAULT_QUALITY = 95  # JPEG and WebP
TEMP_SUFFIX = ".tokfuse-tmp"  # temporaries are ".<target name>.<host>.<pid>.<random>.tokfuse-tmp"
STALE_AGE_S = 24 * 3600
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]


def check_output_ext(ext: str) -> str:
    """An output extension (``".png"`` or ``"png"``, any case) -> ``".png"``; ValueError unless it is
    one of WRITE_EXTS."""
    if not isinstance(ext, str):
        raise TypeError(f"output extension must be a string such as '.png', got {type(ext).__name__}")
    e = "." + ext.strip().lower().lstrip(".")
    if e not in WRITE_EXTS:
        raise ValueError(f"unknown output image extension {ext!r}; use one of {', '.join(sorted(WRITE_EXTS))}")
    return e


def check_output_path(path) -> str:
    """The extension of an output file path, validated (ValueError naming the path otherwise)."""
    ext = Path(os.fspath(path)).suffix.lower()
    if ext not in WRITE_EXTS:
        raise ValueError(
            f"output {os.fspath(path)}: unknown image extension {ext or '(none)'!r}; use one of "
            f"{', '.join(sorted(WRITE_EXTS))}"
        )
    return ext


def check_quality(quality) -> int | None:
    if quality is None:
        return None
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= int(quality) <= 100:
        raise ValueError(f"quality must be an int in [1, 100], got {quality!r}")
    return int(quality)


def check_output_dir(out_dir, *input_dirs) -> Path:
    """Refuse an output folder that is, or lies inside, one of the input folders (outputs would mix
    with, or overwrite, the inputs). Returns ``out_dir`` as a Path."""
    out = Path(out_dir)
    o = Path(os.path.realpath(out))
    for d in input_dirs:
        i = Path(os.path.realpath(d))
        if o == i or i in o.parents:
            raise ValueError(
                f"output folder {out} is {'the' if o == i else 'inside the'} input folder {d}; "
                "choose a folder outside the inputs"
            )
    if out.exists() and not out.is_dir():
        raise ValueError(f"output folder {out} exists and is not a folder")
    return out


def check_not_input(path, what: str = "output", files: dict | None = None, dirs: dict | None = None) -> Path:
    """Refuse to write ``path`` onto an input: ValueError when it is (by any name: links, hard links)
    one of ``files`` ({label: path}; non-path inputs such as arrays are ignored) or lies inside one of
    ``dirs`` ({label: folder}). Returns ``path`` as a Path."""
    out = Path(os.fspath(path))
    for label, src in (files or {}).items():
        if isinstance(src, (str, os.PathLike)) and os.path.exists(src) and out.exists() and out.samefile(src):
            raise ValueError(f"{what} {out} is the {label} input file ({src}); choose another path")
    real = Path(os.path.realpath(out))
    for label, d in (dirs or {}).items():
        if Path(os.path.realpath(d)) in real.parents:
            raise ValueError(f"{what} {out} is inside the {label} input folder {d}; choose a path outside the inputs")
    return out


def check_report_path(report, ir_dir, vis_dir) -> Path:
    """A fuse-dir report path: not an input file, not inside an input folder (ValueError otherwise)."""
    return check_not_input(report, "report", dirs={"ir": ir_dir, "vis": vis_dir})


def _umask() -> int:
    try:
        with open("/proc/self/status") as f:
            return int(next(ln.split()[1] for ln in f if ln.startswith("Umask:")), 8)
    except (OSError, StopIteration, ValueError):
        return 0o022


def open_temp(path):
    """``(file object "w+b", temporary path)``: a new temporary for ``path`` in its folder, created
    exclusively (O_CREAT|O_EXCL|O_NOFOLLOW, unpredictable name, mode 0600) under a name that
    :func:`remove_stale_temps` recognises. Finish with :func:`commit_temp` or :func:`discard_temp`."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name[:100]}.{_HOST}.{os.getpid()}.", suffix=TEMP_SUFFIX, dir=p.parent)
    return os.fdopen(fd, "w+b"), Path(tmp)


def commit_temp(f, tmp, path) -> Path:
    """Flush, fsync and close ``f`` (from :func:`open_temp`), give ``tmp`` the usual permissions
    (0666 & ~umask) and rename it to ``path`` (a link at ``path`` is replaced, never followed).
    On failure the temporary is removed and the exception propagates."""
    try:
        if not f.closed:
            f.flush()
            os.fsync(f.fileno())
            f.close()
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        discard_temp(f, tmp)
        raise
    return Path(path)


def discard_temp(f, tmp) -> None:
    """Close ``f`` and remove the temporary ``tmp`` (never raises)."""
    try:
        f.close()
    except Exception:  # noqa: BLE001 - closing a broken file must not hide the error being handled
        pass
    try:
        os.unlink(tmp)
    except OSError:
        pass


def atomic_write(path, write) -> Path:
    """Create ``path`` atomically: ``write(fileobj)`` fills a temporary file in the same folder
    (:func:`open_temp`), which is flushed, fsync'ed, given the usual permissions (0666 & ~umask) and
    renamed to ``path``. On any failure the temporary is removed and the exception propagates;
    ``path`` is untouched."""
    f, tmp = open_temp(path)
    try:
        write(f)
    except BaseException:
        discard_temp(f, tmp)
        raise
    return commit_temp(f, tmp, path)


def save_image(arr: np.ndarray, path, quality: int | None = None) -> Path:
    """Write a uint8 (H, W) or (H, W, 3) array to ``path`` atomically; the format follows the
    extension (WRITE_EXTS). ``quality`` (1..100, default DEFAULT_QUALITY) applies to JPEG and WebP."""
    from PIL import Image

    fmt = WRITE_EXTS[check_output_path(path)]
    q = check_quality(quality)
    if (
        not isinstance(arr, np.ndarray)
        or arr.dtype != np.uint8
        or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (1, 3)))
    ):
        raise TypeError(
            f"save_image: expected a uint8 (H, W) or (H, W, 3) numpy array, got "
            f"{type(arr).__name__} {getattr(arr, 'dtype', '')} {getattr(arr, 'shape', '')}"
        )
    im = Image.fromarray(np.ascontiguousarray(arr[..., 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr))
    opts = {"quality": q or DEFAULT_QUALITY} if fmt in ("JPEG", "WEBP") else {}
    return atomic_write(path, lambda f: im.save(f, format=fmt, **opts))


def output_ok(path, size: tuple[int, int] | None = None) -> bool:
    """True when ``path`` is a regular file (not a symlink) that decodes completely as an image
    (and, if ``size`` = (width, height) is given, has that size). Never raises for a bad file."""
    from PIL import Image

    from .imageio import READ_FORMATS

    p = Path(path)
    try:
        st = os.lstat(p)
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
        return False
    try:
        with Image.open(p, formats=READ_FORMATS) as im:
            if size is not None and tuple(im.size) != tuple(size):
                return False
            im.load()
    except Exception:  # noqa: BLE001 - any failure to decode means "not done"
        return False
    return True


def remove_stale_temps(folder) -> list[Path]:
    """Remove temporaries of :func:`atomic_write` left in ``folder`` by runs that were killed: only
    names this module makes, regular files owned by this user, written by a process of this host
    that no longer exists, or older than STALE_AGE_S. Returns what was removed."""
    d = Path(folder)
    if not d.is_dir():
        return []
    removed, now, uid = [], time.time(), os.getuid()
    for e in os.scandir(d):
        if not (e.name.startswith(".") and e.name.endswith(TEMP_SUFFIX)):
            continue
        try:
            st = e.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode) or st.st_uid != uid:
            continue
        parts = e.name[: -len(TEMP_SUFFIX)].rsplit(".", 3)  # ".<name>", host, pid, random
        gone = False
        if len(parts) == 4 and parts[1] == _HOST and parts[2].isdigit():
            gone = not _alive(int(parts[2]))
        if gone or now - st.st_mtime > STALE_AGE_S:
            try:
                os.unlink(e.path)
                removed.append(Path(e.path))
            except OSError:
                pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
