"""Atomic output that never replaces what it did not create.

The result is written to a temporary ``.<name>.<host>-<pid>.<hex>.partial`` beside the target
and moved into place at the end with a *no-replace* move:

- a file is published with ``renameat2(RENAME_NOREPLACE)`` or ``os.link`` (both fail if the
  target exists) or, where neither is supported (FAT, some network shares, non-Linux
  systems), by claiming the name with an exclusively created empty placeholder and replacing
  it after checking it is still ours and empty;
- a folder (zarr) with ``renameat2(RENAME_NOREPLACE)``, or ``os.rename``, which on POSIX
  refuses a non-empty folder.

So a file or folder that appeared at the target while we computed is never destroyed, and of
two concurrent writers exactly one succeeds (the other raises :class:`OutputExistsError`).

With ``overwrite=True`` only what existed *when the write started* (same device and inode) is
replaced: a file with ``os.replace``, a folder with ``renameat2(RENAME_EXCHANGE)`` (atomic) or
by moving it aside and back on failure. Something new at the target is still refused.

Temporary files of writers that died (``kill -9``) are removed by the next write to the same
target: a ``.partial`` whose host is this host and whose process is gone.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import errno
import logging
import os
import shutil
import socket
import stat
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .._docstrings import docfiller
from ..errors import FileFormatError, Napari4DSTEMError, OutputExistsError

__all__ = [
    "DiskFullError",
    "OutputSnapshot",
    "atomic_output",
    "check_free_space",
    "clean_stale_partials",
    "output_claims",
    "snapshot_output",
]

log = logging.getLogger(__name__)

_HOST = socket.gethostname().replace(".", "_").replace("-", "_")[:32] or "host"
# temporary files of the old naming (no owner) older than this are removed as stale
_STALE_UNOWNED_S = 24 * 3600.0
_FREE_SPACE_MARGIN = 16 * 2**20


class DiskFullError(Napari4DSTEMError, OSError):
    """Not enough free space for an output, found before writing or on ENOSPC while writing."""

    def __init__(self, path: str | os.PathLike, need: int | None = None, free: int | None = None):
        self.path = str(path)
        if need is not None and free is not None:
            msg = (f"{self.path}: not enough free space: the output needs about "
                   f"{need / 2**20:.1f} MiB, the disk has {free / 2**20:.1f} MiB free")  # fmt: skip
        else:
            msg = f"{self.path}: the disk is full; nothing was written (free space and retry)"
        super().__init__(msg)


@dataclass(frozen=True)
class OutputSnapshot:
    """What was at an output path when a command started (``None`` fields: nothing)."""

    path: str
    dev: int | None = None
    ino: int | None = None
    ctime_ns: int | None = None
    is_dir: bool = False

    @property
    def existed(self) -> bool:
        return self.ino is not None


def snapshot_output(path: str | os.PathLike, *, overwrite: bool = False) -> OutputSnapshot:
    """Record what is at ``path`` now.

    Record what is at ``path`` now; raise :class:`OutputExistsError` there is something and ``overwrite`` is
    False, or FileFormatError when the folder does not exist.

    Call it before starting long work so that an existing output is refused before the work,
    and pass the snapshot to :func:`atomic_output` so that only this very file is replaced.
    """
    target = Path(path)
    if not target.parent.is_dir():
        raise FileFormatError(target, "the output folder does not exist")
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return OutputSnapshot(str(target))
    except OSError as e:
        raise FileFormatError(target, f"cannot check the output path ({e.strerror})") from None
    if not overwrite:
        raise OutputExistsError(target)
    return OutputSnapshot(str(target), st.st_dev, st.st_ino, st.st_ctime_ns, stat.S_ISDIR(st.st_mode))


def check_free_space(path: str | os.PathLike, need_bytes: int) -> None:
    """Raise :class:`DiskFullError` when the disk is short of ``need_bytes``.

    Raise :class:`DiskFullError` when the disk holding ``path`` has less than ``need_bytes`` (+16 MiB) free.
    """
    folder = Path(path).parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if free < int(need_bytes) + _FREE_SPACE_MARGIN:
        raise DiskFullError(path, int(need_bytes), free)


# -- no-replace / exchange moves ------------------------------------------------------------
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_renameat2 = None
_link = os.link  # a name of its own: tests take hard links away from this module only


def _load_renameat2():
    global _renameat2
    if _renameat2 is None:
        fn = False
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fn = libc.renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            fn.restype = ctypes.c_int
        except (AttributeError, OSError):
            fn = False
        _renameat2 = fn
    return _renameat2 or None


def _rename2(src: Path, dst: Path, flags: int) -> bool:
    """``renameat2(src, dst, flags)``; False when the system lacks it (raises on real errors)."""
    fn = _load_renameat2()
    if fn is None:
        return False
    rc = fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False  # old kernel or a filesystem without the flag
    raise OSError(err, os.strerror(err), str(dst))


def _move_no_replace(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst``; FileExistsError (nothing changed) if ``dst`` exists."""
    try:
        if _rename2(src, dst, _RENAME_NOREPLACE):
            return
    except OSError as e:
        if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise FileExistsError(errno.EEXIST, "exists", str(dst)) from None
        raise
    if src.is_dir():
        # POSIX rename refuses a non-empty folder and a file as target; it can only take the
        # place of an empty folder, which holds no data
        if os.path.lexists(dst) and not (dst.is_dir() and not dst.is_symlink()):
            raise FileExistsError(errno.EEXIST, "exists", str(dst))
        try:
            os.rename(src, dst)
        except OSError as e:
            if e.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                raise FileExistsError(errno.EEXIST, "exists", str(dst)) from None
            raise
        return
    try:
        _link(src, dst)
    except FileExistsError:
        raise
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        # no hard links here (FAT, some network shares)
        _publish_by_placeholder(src, dst)
        return
    os.unlink(src)


def _before_publish(dst: Path) -> None:
    """Test hook: runs between claiming the placeholder and checking it (does nothing)."""


def _publish_by_placeholder(src: Path, dst: Path) -> None:
    """Move file ``src`` to ``dst`` without hard links or renameat2.

    Move file ``src`` to ``dst`` without hard links or renameat2: claim the name with an empty placeholder
    created exclusively (``O_EXCL``: fails if anything is there, so two such writers cannot both get it), then
    replace the placeholder, after checking that it is still ours and still empty. A writer that creates
    exclusively (ours, with any of the three methods) is never overwritten; only one that truncates an
    existing file in place, in the microseconds between the check and the rename, could still lose its bytes.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(dst, flags, 0o600)  # FileExistsError: something is there, nothing changed
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    mine = (st.st_dev, st.st_ino, st.st_ctime_ns)

    def still_mine() -> bool:
        try:
            now = os.lstat(dst)
        except FileNotFoundError:
            return False
        return (now.st_dev, now.st_ino, now.st_ctime_ns) == mine and now.st_size == 0 and stat.S_ISREG(now.st_mode)

    try:
        _before_publish(dst)
        if not still_mine():  # written into, or replaced, meanwhile: theirs stays
            raise FileExistsError(errno.EEXIST, "exists", str(dst))
        os.replace(src, dst)
    except BaseException:
        if still_mine():
            with contextlib.suppress(OSError):
                os.unlink(dst)
        raise


def _same(snap: OutputSnapshot, st: os.stat_result) -> bool:
    # the change time tells a file modified or re-created (inode numbers are reused) since
    return snap.existed and (st.st_dev, st.st_ino, st.st_ctime_ns) == (snap.dev, snap.ino, snap.ctime_ns)


def _replace_existing(tmp: Path, target: Path, snap: OutputSnapshot) -> None:
    """Replace ``target`` (which must still be the object in ``snap``) by ``tmp``."""
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        _move_no_replace(tmp, target)  # the old one was removed meanwhile: nothing to replace
        return
    if not _same(snap, st) or stat.S_ISDIR(st.st_mode) != tmp.is_dir():
        raise OutputExistsError(target)  # new since the start, or a folder for a file
    if not tmp.is_dir() and not stat.S_ISDIR(st.st_mode):
        os.replace(tmp, target)
        return
    if _rename2(tmp, target, _RENAME_EXCHANGE):
        _remove(tmp)  # tmp now holds the old content
        return
    old = target.with_name(f".{target.name}.{_HOST}-{os.getpid()}.{uuid.uuid4().hex[:8]}.old")
    os.rename(target, old)
    try:
        _move_no_replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            _move_no_replace(old, target)  # put the original back
        raise
    _remove(old)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _is_disk_full(e: OSError) -> bool:
    return e.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(e)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid() or os.name == "nt":
        # on Windows os.kill(pid, 0) would send CTRL_C_EVENT: never probe, assume alive (the
        # partial is then removed by age, see clean_stale_partials)
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return True
    return True


def clean_stale_partials(target: str | os.PathLike) -> list[Path]:
    """Remove temporary files left beside ``target`` by writers that died; return them.

    A ``.<name>.<host>-<pid>.<hex>.partial`` (or ``.old``) is stale when its host is this host
    and process ``pid`` is gone; an owner-less one of the old naming when older than a day. A
    stale ``.old`` folder whose target is missing is a zarr store moved aside by an interrupted
    ``--overwrite``: it is put back, not deleted.
    """
    target = Path(target)
    removed = []
    prefix = f".{target.name}."
    try:
        siblings = [c for c in target.parent.iterdir() if c.name.startswith(prefix)]
    except OSError:
        return removed
    now = time.time()
    for c in siblings:
        rest = c.name[len(prefix) :]
        kind = rest.rsplit(".", 1)[-1]
        if kind not in ("partial", "old"):
            continue
        parts = rest.split(".")
        stale = False
        if len(parts) == 3 and "-" in parts[0]:
            host, _, pid = parts[0].rpartition("-")
            stale = host == _HOST and pid.isdigit() and not _pid_alive(int(pid))
            if not stale and os.name == "nt":
                with contextlib.suppress(OSError):
                    stale = now - c.lstat().st_mtime > _STALE_UNOWNED_S
        elif len(parts) == 2:
            with contextlib.suppress(OSError):
                stale = now - c.lstat().st_mtime > _STALE_UNOWNED_S
        if not stale:
            continue
        if kind == "old" and not os.path.lexists(target):
            with contextlib.suppress(OSError):
                _move_no_replace(c, target)
                log.warning("restored %s from an interrupted overwrite", target)
                continue
        _remove(c)
        removed.append(c)
    return removed


_CLAIMS: contextvars.ContextVar[dict | None] = contextvars.ContextVar("output_claims", default=None)


def _key(path: str | os.PathLike) -> str:
    return os.path.normcase(os.path.abspath(path))


@contextlib.contextmanager
def output_claims(snapshots) -> Iterator[list[Path]]:
    """Writes to these paths use the snapshots taken when a command started.

    Within the block, writes to these paths use the given snapshots (taken when a command started) instead of
    one taken at write time; yields the list of paths that were replaced.
    """
    replaced: list[Path] = []
    claims = {_key(s.path): (s, replaced) for s in snapshots}
    token = _CLAIMS.set({**(_CLAIMS.get() or {}), **claims})
    try:
        yield replaced
    finally:
        _CLAIMS.reset(token)


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    snapshot: OutputSnapshot | None = None,
    expected_bytes: int | None = None,
) -> Iterator[Path]:
    """Yield a temporary path; on success it is moved to ``path``, on failure it is removed.

    Nothing half-written is ever left at ``path`` and nothing is replaced that was not there
    when the write started (or when ``snapshot`` was taken, see :func:`snapshot_output`).
    Raises :class:`OutputExistsError` when ``path`` exists and ``overwrite`` is False, or when
    something new appeared at ``path`` meanwhile; :class:`DiskFullError` when
    ``expected_bytes`` do not fit or the disk fills up while writing.
    """
    target = Path(path)
    claim = (_CLAIMS.get() or {}).get(_key(target))
    if snapshot is None and claim is not None:
        snapshot = claim[0]  # what was there when the command started
    snap = snapshot if snapshot is not None else snapshot_output(target, overwrite=overwrite)
    if not target.parent.is_dir():
        raise FileFormatError(target, "the output folder does not exist")
    clean_stale_partials(target)
    if expected_bytes is not None:
        check_free_space(target, expected_bytes)
    tmp = target.with_name(f".{target.name}.{_HOST}-{os.getpid()}.{uuid.uuid4().hex[:8]}.partial")
    try:
        try:
            yield tmp
        except OSError as e:
            if not isinstance(e, Napari4DSTEMError) and _is_disk_full(e):
                raise DiskFullError(target) from None
            raise
        if not os.path.lexists(tmp):
            raise FileFormatError(target, "the writer produced no output")
        try:
            if snap.existed:
                _replace_existing(tmp, target, snap)
                log.info("replaced the existing %s", target)
                if claim is not None:
                    claim[1].append(target)
            else:
                _move_no_replace(tmp, target)
        except FileExistsError:
            raise OutputExistsError(target) from None
    finally:
        if os.path.lexists(tmp):
            _remove(tmp)


#: numpydoc text shared by the writers (npy, zarr, EMD), filled in by :func:`write_doc`
WRITE_DOCS = {
    "overwrite": "overwrite : bool\n"
    "    Replace an existing output (default False); only what was there when the write (or\n"
    "    the command, see ``snapshot``) started is replaced.",
    "snapshot": "snapshot : OutputSnapshot, optional\n"
    "    What existed at ``path`` when the command started\n"
    "    (:func:`~napari_4dstem.io._atomic.snapshot_output`).",
    "written": "Path\n    ``path``, complete: it is written under a temporary name and moved into place.",
    "exists": "OutputExistsError\n"
    "    When ``path`` exists without ``overwrite``, or something new appeared there meanwhile.\n"
    "DiskFullError\n"
    "    When the output does not fit or the disk fills up while writing.",
}
write_doc = docfiller(WRITE_DOCS)
