"""Fault injection for the reliability tests: full and read-only folders.

Two ways to make a folder full or read-only, chosen by what the machine allows:

* ``tmpfs`` (root, and ``mount`` works): a real tiny tmpfs mounted on the folder and filled
  up (every writer then meets a real ``ENOSPC``, and ITK's NIfTI writer its real silent
  short write), or a read-only bind mount of the folder;
* ``patched`` (anywhere, e.g. CI without root): the writers mrisr uses are patched so that
  writes under the folder fail as they do on a full or read-only disk: Python ``open`` for
  writing and ``tempfile.mkstemp`` raise ``OSError(ENOSPC / EROFS)``, ``torch.save`` and
  ``blosc2.asarray`` raise, and ``SimpleITK.WriteImage`` writes a truncated file *without
  raising*, as ITK's NIfTI writer does on a full disk.

``modes()`` lists the modes available here (tests are parametrised over them).
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_CAN_MOUNT: bool | None = None


def can_mount() -> bool:
    """Whether tmpfs and bind mounts can be made here (root with CAP_SYS_ADMIN)."""
    global _CAN_MOUNT
    if _CAN_MOUNT is None:
        _CAN_MOUNT = False
        if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("mount"):
            d = Path(tempfile.mkdtemp(prefix="mrisr_mount_probe_"))
            try:
                r = subprocess.run(
                    ["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(d)],
                    capture_output=True,
                )
                if r.returncode == 0:
                    _CAN_MOUNT = True
                    subprocess.run(["umount", str(d)], capture_output=True)
            finally:
                d.rmdir()
    return _CAN_MOUNT


def modes() -> list:
    """``["tmpfs", "patched"]`` where mounting works, else ``["patched"]`` (plus a skipped
    ``tmpfs`` so the report shows it)."""
    tmpfs = pytest.param(
        "tmpfs", marks=pytest.mark.skipif(not can_mount(), reason="needs root and mount")
    )
    return [tmpfs, "patched"]


def _under(path: object, folder: Path) -> bool:
    try:
        p = Path(os.fspath(path)).resolve()
    except TypeError:
        return False
    return p == folder or folder in p.parents


class _LimitedFile:
    """A file opened for writing on a disk with ``budget[0]`` bytes left."""

    def __init__(self, f, budget: list[int]):
        self._f, self._budget = f, budget

    def write(self, data):
        if len(data) > self._budget[0]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self._f.name)
        self._budget[0] -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()
        return False


def _patch_writers(monkeypatch: pytest.MonkeyPatch, folder: Path, err: int, free: int = 0) -> None:
    """Every writer mrisr uses fails under ``folder`` as on a full (ENOSPC, ``free`` bytes
    left for Python writes) or read-only (EROFS) disk; ITK writes a truncated file
    silently on a full disk."""
    import os as os_module

    import blosc2
    import SimpleITK as sitk
    import torch

    real_open, real_mkstemp = builtins.open, tempfile.mkstemp
    real_write_image, real_torch_save, real_asarray = sitk.WriteImage, torch.save, blosc2.asarray
    budget = [free]

    def fake_open(file, mode="r", *a, **k):
        if any(c in mode for c in "wax+") and _under(file, folder):
            if err == errno.EROFS:
                raise OSError(err, os.strerror(err), str(file))
            return _LimitedFile(real_open(file, mode, *a, **k), budget)
        return real_open(file, mode, *a, **k)

    def refuse(real):
        def fake(path, *a, **k):
            if err == errno.EROFS and _under(path, folder):
                raise OSError(err, os.strerror(err), str(path))
            return real(path, *a, **k)

        return fake

    if err == errno.EROFS:
        for name in ("mkdir", "rmdir", "unlink", "remove", "replace", "rename"):
            monkeypatch.setattr(os_module, name, refuse(getattr(os_module, name)))
        monkeypatch.setattr(shutil, "rmtree", refuse(shutil.rmtree))

    def fake_mkstemp(*a, dir=None, **k):
        if err == errno.EROFS and dir is not None and _under(dir, folder):
            raise OSError(err, os.strerror(err), str(dir))
        return real_mkstemp(*a, dir=dir, **k)

    def fake_write_image(image, filename, *a, **k):
        if _under(filename, folder):
            if err == errno.EROFS:
                raise RuntimeError(f"ITK ERROR: could not open {filename} for writing")
            real_write_image(image, filename, *a, **k)
            size = os.path.getsize(filename)
            with real_open(filename, "r+b") as f:  # "NWAD: wrote only ... bytes", no raise
                f.truncate(size // 3)
            return None
        return real_write_image(image, filename, *a, **k)

    def fake_torch_save(obj, f, *a, **k):
        name = getattr(f, "name", f)
        if _under(name, folder):
            raise OSError(err, os.strerror(err), str(name))
        return real_torch_save(obj, f, *a, **k)

    def fake_asarray(array, *a, urlpath=None, **k):
        if urlpath is not None and _under(urlpath, folder):
            raise OSError(err, os.strerror(err), str(urlpath))
        return real_asarray(array, *a, urlpath=urlpath, **k)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(tempfile, "mkstemp", fake_mkstemp)
    monkeypatch.setattr(sitk, "WriteImage", fake_write_image)
    monkeypatch.setattr(torch, "save", fake_torch_save)
    monkeypatch.setattr(blosc2, "asarray", fake_asarray)


@contextlib.contextmanager
def full_folder(
    folder: Path, mode: str, monkeypatch: pytest.MonkeyPatch, free: int = 0
) -> Iterator[Path]:
    """``folder`` (created if needed; its files kept) on a disk with about ``free`` bytes left."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if mode == "patched":
        with monkeypatch.context() as m:
            _patch_writers(m, folder.resolve(), errno.ENOSPC, free)
            yield folder
        return
    saved = Path(tempfile.mkdtemp(prefix="mrisr_full_keep_"))
    for p in folder.iterdir():
        shutil.move(str(p), saved / p.name)
    used = sum(p.stat().st_size for p in saved.rglob("*") if p.is_file())
    pages = (used + free) // 4096 + 64  # room for the kept files and a filler's slack
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={pages * 4096}", "tmpfs", str(folder)], check=True
    )
    try:
        for p in saved.iterdir():
            shutil.move(str(p), folder / p.name)
        filler = folder / ".filler"
        with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 4096)
        if free:
            os.truncate(filler, max(0, filler.stat().st_size - free))
        yield folder
    finally:
        for p in list(folder.iterdir()):
            if p.name != ".filler":
                shutil.move(str(p), saved / p.name)
        subprocess.run(["umount", str(folder)], check=True)
        for p in saved.iterdir():
            shutil.move(str(p), folder / p.name)
        saved.rmdir()


@contextlib.contextmanager
def read_only_folder(folder: Path, mode: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``folder`` (created if needed) made read-only: a read-only bind mount (root), chmod
    0555 (not root), or patched writers raising EROFS."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if mode == "patched":
        if hasattr(os, "geteuid") and os.geteuid() != 0:
            folder.chmod(0o555)
            try:
                yield folder
            finally:
                folder.chmod(0o755)
            return
        with monkeypatch.context() as m:
            _patch_writers(m, folder.resolve(), errno.EROFS)
            yield folder
        return
    subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True)
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def tree_state(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its content (to assert nothing changed)."""
    folder = Path(folder)
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".filler"
    }
