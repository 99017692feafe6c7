"""Atomic, verified file writing and JSON helpers.

Every file a command writes goes through :func:`atomic_path`: data are written to a
temporary file in the destination folder, the temporary file is *verified* (not empty, and
for the formats mrisr writes, read back: JSON parsed, gzip streams decompressed to their
CRC, PNG/zip/blosc2 structure checked), given the permissions the umask asks for, and only
then renamed over the final name. A crash, a full disk (some writers, such as ITK's NIfTI
writer, report a short write on stderr but do not raise), a read-only folder or Ctrl-C
therefore never leaves a half-written file under the final name, and the earlier file of
that name, if any, stays as it was. Write failures are one-line :class:`MrisrError` s
naming the path and the fix.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import json
import math
import os
import tempfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mrisr.utilities.errors import MrisrError

Verifier = Callable[[Path], None]


class IncompleteWrite(Exception):
    """Raised by a verifier: the temporary file is not a complete file of its format."""


def _umask() -> int:
    """The process umask: from /proc where it is shown (no change, thread-safe), else read
    by setting it and setting it straight back."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _ending(path: Path) -> str:
    name = path.name.lower()
    for e in (".nii.gz", ".b2nd", ".json", ".png", ".pth", ".npy", ".gz"):
        if name.endswith(e):
            return e
    return ""


def _check_gzip(path: Path) -> None:
    try:
        with gzip.open(path, "rb") as f:
            while f.read(1 << 24):
                pass
    except (EOFError, OSError, zlib.error) as e:
        raise IncompleteWrite(f"truncated gzip stream ({e})") from None


def _check_json(path: Path) -> None:
    try:
        with open(path, encoding="utf-8") as f:
            json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise IncompleteWrite(f"not valid JSON when read back ({e})") from None


def _check_png(path: Path) -> None:
    data = path.read_bytes()
    if not data.startswith(b"\x89PNG\r\n\x1a\n") or b"IEND" not in data[-12:]:
        raise IncompleteWrite("PNG without its end chunk")


def _check_zip(path: Path) -> None:
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise IncompleteWrite(f"damaged archive ({e})") from None
    if bad is not None:
        raise IncompleteWrite(f"damaged member {bad}")


def _check_b2nd(path: Path) -> None:
    import blosc2

    try:
        arr = blosc2.open(str(path), mode="r")
        arr[tuple(slice(-1, None) for _ in arr.shape)]  # decode the last chunk
    except Exception as e:  # blosc2 raises several types for damaged frames
        raise IncompleteWrite(f"damaged blosc2 frame ({type(e).__name__})") from None


def _check_npy(path: Path) -> None:
    import numpy as np

    try:
        np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise IncompleteWrite(f"damaged .npy file ({e})") from None


_VERIFIERS: dict[str, Verifier] = {
    ".nii.gz": _check_gzip,
    ".gz": _check_gzip,
    ".json": _check_json,
    ".png": _check_png,
    ".pth": _check_zip,
    ".b2nd": _check_b2nd,
    ".npy": _check_npy,
}


def verify_file(path: Path, ending_of: Path | None = None, extra: Verifier | None = None) -> None:
    """Raise :class:`IncompleteWrite` unless ``path`` is a complete, non-empty file of the
    format its name (or ``ending_of``'s name) says."""
    if not path.is_file() and not path.is_dir():
        raise IncompleteWrite("nothing was written")
    if path.is_file() and path.stat().st_size == 0:
        raise IncompleteWrite("the file is empty")
    check = _VERIFIERS.get(_ending(ending_of or path))
    if check is not None:
        check(path)
    if extra is not None:
        extra(path)


def write_error(path: Path, e: OSError) -> MrisrError:
    """The one-line error for an OSError while writing ``path``."""
    why = e.strerror or str(e)
    if e.errno == errno.ENOSPC or e.errno == errno.EDQUOT:
        fix = "free disk space and re-run"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "make the folder writable or choose another one"
    elif e.errno in (errno.ENOTDIR, errno.EEXIST):
        fix = "a file is in the way of a folder: move it or choose another path"
    else:
        fix = "check the folder and re-run"
    return MrisrError(f"{path}: cannot write ({why}); {fix}")


def _make_dirs(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError as e:  # a file where a folder should be
        raise write_error(folder, OSError(errno.ENOTDIR, "not a folder", str(e.filename))) from None
    except OSError as e:
        raise write_error(folder, e) from None


def make_dirs(folder: str | os.PathLike) -> Path:
    """``mkdir -p`` with one-line errors (a file in the way, read-only, full)."""
    folder = Path(folder)
    _make_dirs(folder)
    return folder


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike, suffix: str | None = None, verify: Verifier | None = None
) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; verify it, then rename it to ``path``.

    ``suffix`` keeps file endings that writers look at (e.g. ``.nii.gz``); by default
    the suffixes of ``path`` are reused. ``verify`` is an extra check of the finished
    temporary file (after the generic one chosen by the file ending). The final file gets
    mode ``0o666 & ~umask``, as a plain ``open`` would give it.
    """
    path = Path(path)
    if path.is_dir():
        raise MrisrError(f"{path}: is a folder; give a file name")
    _make_dirs(path.parent)
    if suffix is None:
        suffix = "".join(path.suffixes)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise write_error(path, e) from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        try:
            verify_file(tmp_path, path, verify)
        except IncompleteWrite as e:
            raise MrisrError(
                f"{path}: the written file is incomplete ({e}); is the disk full? free space "
                "and re-run (the previous file, if any, is unchanged)"
            ) from None
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise write_error(path, e) from None
    except RuntimeError as e:  # torch, blosc2 and ITK writers report I/O failures this way
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise MrisrError(
            f"{path}: cannot write ({why}); is the disk full or the folder read-only?"
        ) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    def same_size(tmp: Path) -> None:
        if tmp.stat().st_size != len(data):
            raise IncompleteWrite(f"{tmp.stat().st_size} of {len(data)} bytes written")

    with atomic_path(path, verify=same_size) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def save_npy(path: str | os.PathLike, array: Any) -> None:
    """``np.save`` atomically and verified (no pickles: ``allow_pickle=False``)."""
    import numpy as np

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(array), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serialisable")


def finite_or_none(obj: Any) -> Any:
    """``obj`` with every NaN/Infinity float replaced by None (JSON has no such numbers)."""
    import numpy as np

    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return finite_or_none(obj.tolist())
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def save_json(obj: Any, path: str | os.PathLike, indent: int = 2) -> None:
    """Write ``obj`` as strict JSON atomically (numpy scalars and arrays are converted;
    NaN and Infinity, which JSON does not have, are written as ``null``)."""
    text = json.dumps(
        finite_or_none(obj), indent=indent, default=_json_default, sort_keys=False, allow_nan=False
    )
    write_bytes_atomic(path, (text + "\n").encode("utf-8"))


#: deeper nesting than any file mrisr writes (plans: 5 levels) is refused, not recursed into
MAX_JSON_DEPTH = 32


def _depth(obj: Any) -> int:
    depth, level = 0, [obj]
    while level:
        level = [
            v
            for o in level
            if isinstance(o, (dict, list))
            for v in (o.values() if isinstance(o, dict) else o)
        ]
        depth += 1
        if depth > MAX_JSON_DEPTH:
            break
    return depth


def parse_json(data: str | bytes) -> Any:
    """``json.loads`` with a depth limit: a ValueError (not a RecursionError) for nesting
    deeper than :data:`MAX_JSON_DEPTH`."""
    try:
        obj = json.loads(data)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if _depth(obj) > MAX_JSON_DEPTH:
        raise ValueError(f"nested more than {MAX_JSON_DEPTH} levels deep")
    return obj


def load_json(path: str | os.PathLike) -> Any:
    with open(path, "rb") as f:
        return parse_json(f.read())


def load_json_or_error(path: str | os.PathLike, fix: str) -> Any:
    """``load_json`` with a one-line MrisrError naming the file and ``fix`` if it is damaged."""
    path = Path(path)
    try:
        return load_json(path)
    except (ValueError, UnicodeDecodeError) as e:
        raise MrisrError(f"{path}: not valid JSON ({e}); {fix}") from None
    except OSError as e:
        raise MrisrError(f"{path}: cannot read ({e.strerror or e}); {fix}") from None
