"""Atomic writes never replace what they did not create; full disks and dead writers are handled."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from napari_4dstem import DataCube
from napari_4dstem.errors import Napari4DSTEMError, OutputExistsError
from napari_4dstem.io import _atomic, open_datacube, save_datacube
from napari_4dstem.io._atomic import (
    DiskFullError,
    atomic_output,
    check_free_space,
    clean_stale_partials,
    snapshot_output,
)


def _hidden(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _no_links(src, dst, *a, **k):
    raise OSError(errno.EPERM, "Operation not permitted (no hard links on this filesystem)", str(dst))


@pytest.fixture(params=["renameat2", "fallback", "no-links"])
def moves(request, monkeypatch):
    """Run each test with renameat2, with the portable fallback (os.link / os.rename) and with
    neither (FAT, some network shares: files published through an O_EXCL placeholder)."""
    if request.param in ("fallback", "no-links"):
        monkeypatch.setattr(_atomic, "_renameat2", False)
    if request.param == "no-links":
        monkeypatch.setattr(_atomic, "_link", _no_links)
    return request.param


def test_file_created_meanwhile_is_never_replaced(tmp_path, moves):
    target = tmp_path / "out.bin"
    with pytest.raises(OutputExistsError), atomic_output(target) as tmp:
        tmp.write_bytes(b"ours")
        target.write_bytes(b"theirs")  # another program creates the output while we compute
    assert target.read_bytes() == b"theirs"
    assert _hidden(tmp_path) == []


def test_overwrite_replaces_only_what_existed_at_start(tmp_path, moves):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with atomic_output(target, overwrite=True) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    # a file that did not exist at the start is not ours to replace, even with overwrite
    other = tmp_path / "other.bin"
    with pytest.raises(OutputExistsError), atomic_output(other, overwrite=True) as tmp:
        tmp.write_bytes(b"ours")
        other.write_bytes(b"theirs")
    assert other.read_bytes() == b"theirs"
    # nor is a file swapped in (new inode) after the start
    with pytest.raises(OutputExistsError), atomic_output(target, overwrite=True) as tmp:
        tmp.write_bytes(b"ours")
        target.unlink()
        target.write_bytes(b"swapped")
    assert target.read_bytes() == b"swapped"
    assert _hidden(tmp_path) == []


def test_snapshot_taken_before_work_refuses_early(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"x")
    with pytest.raises(OutputExistsError):
        snapshot_output(target)
    snap = snapshot_output(target, overwrite=True)
    assert snap.existed
    with atomic_output(target, snapshot=snap) as tmp:
        tmp.write_bytes(b"y")
    assert target.read_bytes() == b"y"
    with pytest.raises(Napari4DSTEMError, match="output folder does not exist"):
        snapshot_output(tmp_path / "nope" / "x.npy")


def test_zarr_folder_created_meanwhile_survives(tmp_path, small_cube, moves, monkeypatch):
    target = tmp_path / "c.zarr"
    real = _atomic._move_no_replace

    def intruder(src, dst):
        dst.mkdir()
        (dst / "user.txt").write_text("precious")
        return real(src, dst)

    monkeypatch.setattr(_atomic, "_move_no_replace", intruder)
    with pytest.raises(OutputExistsError):
        save_datacube(target, small_cube)
    assert (target / "user.txt").read_text() == "precious"
    assert _hidden(tmp_path) == []


def test_zarr_overwrite_swaps_and_restores(tmp_path, small_cube, moves, monkeypatch):
    target = tmp_path / "c.zarr"
    save_datacube(target, small_cube)
    bigger = DataCube(np.ones((3, 2, 5, 4), np.uint8))
    save_datacube(target, bigger, overwrite=True)
    assert open_datacube(target).shape == (3, 2, 5, 4)
    assert _hidden(tmp_path) == []
    if moves == "fallback":
        # the move into place fails after the old store was moved aside: it is put back
        real = _atomic._move_no_replace
        calls = []

        def failing(src, dst):
            calls.append(src)
            if len(calls) == 1:
                raise OSError(errno.EIO, "simulated failure")
            return real(src, dst)

        monkeypatch.setattr(_atomic, "_move_no_replace", failing)
        with pytest.raises(OSError, match="simulated"):
            save_datacube(target, small_cube, overwrite=True)
        assert open_datacube(target).shape == (3, 2, 5, 4)
        assert _hidden(tmp_path) == []


def test_two_concurrent_writers_one_wins(tmp_path, moves):
    target = tmp_path / "out.bin"
    barrier = threading.Barrier(2)
    results = []

    def writer(tag):
        try:
            with atomic_output(target) as tmp:
                tmp.write_bytes(tag)
                barrier.wait(timeout=10)
            results.append(tag)
        except OutputExistsError:
            results.append(None)

    threads = [threading.Thread(target=writer, args=(t,)) for t in (b"a", b"b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if r is not None]
    assert len(winners) == 1 and results.count(None) == 1
    assert target.read_bytes() == winners[0]


def test_stale_partials_of_dead_writers_are_removed(tmp_path):
    target = tmp_path / "out.npy"
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead = int(proc.stdout)
    stale = tmp_path / f".out.npy.{_atomic._HOST}-{dead}.0123abcd.partial"
    stale.write_bytes(b"x" * 1000)
    live = tmp_path / f".out.npy.{_atomic._HOST}-{os.getpid()}.4567abcd.partial"
    live.write_bytes(b"y")
    other_host = tmp_path / f".out.npy.elsewhere-{dead}.89abcdef.partial"
    other_host.write_bytes(b"z")
    old_style = tmp_path / ".out.npy.deadbeef.partial"
    old_style.write_bytes(b"w")
    os.utime(old_style, (1, 1))
    assert sorted(p.name for p in clean_stale_partials(target)) == sorted([stale.name, old_style.name])
    assert live.exists() and other_host.exists()
    # and a write to the same target cleans by itself
    stale.write_bytes(b"x")
    save_datacube(target, DataCube(np.zeros((1, 2, 3, 4), np.uint8)))
    assert not stale.exists() and live.exists()


def test_stale_old_store_is_restored_not_deleted(tmp_path, small_cube):
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    target = tmp_path / "c.zarr"
    save_datacube(target, small_cube)
    aside = tmp_path / f".c.zarr.{_atomic._HOST}-{int(proc.stdout)}.0123abcd.old"
    target.rename(aside)  # an --overwrite killed between its two renames
    clean_stale_partials(target)
    assert open_datacube(target).shape == small_cube.shape
    assert _hidden(tmp_path) == []


def test_full_disk_is_an_error_not_sigbus(tmp_path, monkeypatch):
    with pytest.raises(DiskFullError, match="not enough free space"):
        check_free_space(tmp_path / "x.npy", 2**62)

    class Usage:
        free = 1000

    monkeypatch.setattr(_atomic.shutil, "disk_usage", lambda p: Usage)
    dc = DataCube(np.zeros((4, 4, 8, 8), np.uint16))
    with pytest.raises(DiskFullError):
        save_datacube(tmp_path / "x.npy", dc)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    # ENOSPC while writing (a disk filled by someone else): our error, the temporary removed
    with pytest.raises(DiskFullError, match="disk is full"), atomic_output(tmp_path / "y.bin") as tmp:
        tmp.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_npy_writer_on_a_full_device_raises(tmp_path, monkeypatch):
    # /dev/full answers every write with ENOSPC: the .npy writer must raise, not die (SIGBUS)
    real_open = open

    def to_full(path, mode="r", *a, **k):
        if str(path).endswith(".partial"):
            real_open(path, "xb").close()
            return real_open("/dev/full", "wb")
        return real_open(path, mode, *a, **k)

    monkeypatch.setattr("builtins.open", to_full)
    with pytest.raises(DiskFullError):
        save_datacube(tmp_path / "x.npy", DataCube(np.zeros((4, 4, 64, 64), np.uint16)))
    monkeypatch.undo()
    assert not (tmp_path / "x.npy").exists()
    assert _hidden(tmp_path) == []


def test_npy_writer_round_trip_large_rows(tmp_path, monkeypatch):
    from napari_4dstem.io import npy

    monkeypatch.setattr(npy, "_BLOCK_BYTES", 3 * 5 * 7 * 2)  # a block is less than one scan row
    a = np.arange(4 * 5 * 6 * 7, dtype=">u2").reshape(4, 5, 6, 7)
    p = save_datacube(tmp_path / "a.npy", DataCube(a))
    np.testing.assert_array_equal(np.load(p), a)
    monkeypatch.setattr(npy, "_BLOCK_BYTES", 2 * 5 * 6 * 7 * 2)
    p2 = save_datacube(tmp_path / "b.npy", DataCube(a))
    np.testing.assert_array_equal(np.load(p2), a)


# -- the placeholder publish (no renameat2, no hard links) ----------------------------------
@pytest.fixture
def no_links(monkeypatch):
    monkeypatch.setattr(_atomic, "_renameat2", False)
    monkeypatch.setattr(_atomic, "_link", _no_links)


def test_placeholder_publish_writes_and_refuses_an_existing_target(tmp_path, no_links):
    target = tmp_path / "out.bin"
    with atomic_output(target) as tmp:
        tmp.write_bytes(b"ours")
    assert target.read_bytes() == b"ours"
    with pytest.raises(OutputExistsError), atomic_output(tmp_path / "x.bin") as tmp:
        tmp.write_bytes(b"second")
        (tmp_path / "x.bin").write_bytes(b"theirs")
    assert (tmp_path / "x.bin").read_bytes() == b"theirs"
    assert _hidden(tmp_path) == []


@pytest.mark.parametrize("intruder", ["writes-into-placeholder", "replaces-placeholder", "removes-placeholder"])
def test_placeholder_taken_over_meanwhile_is_kept(tmp_path, no_links, monkeypatch, intruder):
    # another program acts on the name between our claim and our rename: its file survives,
    # ours is refused, and nothing of ours is left behind
    target = tmp_path / "out.bin"

    def act(dst):
        assert dst.read_bytes() == b""  # our placeholder holds the name
        if intruder == "writes-into-placeholder":
            dst.write_bytes(b"theirs")  # open(..., "w") truncates and writes in place
        elif intruder == "replaces-placeholder":
            dst.unlink()
            dst.write_bytes(b"theirs")
        else:
            dst.unlink()

    monkeypatch.setattr(_atomic, "_before_publish", act)
    with pytest.raises(OutputExistsError), atomic_output(target) as tmp:
        tmp.write_bytes(b"ours")
    if intruder == "removes-placeholder":
        assert not target.exists()
    else:
        assert target.read_bytes() == b"theirs"
    assert _hidden(tmp_path) == []


def test_placeholder_publish_two_writers_exactly_one_wins(tmp_path, no_links, monkeypatch):
    # writer B publishes while writer A holds its placeholder: B's exclusive create fails
    target = tmp_path / "out.bin"
    outcome = {}

    def b_publishes(dst):
        monkeypatch.setattr(_atomic, "_before_publish", lambda d: None)
        try:
            with atomic_output(target) as tmp_b:
                tmp_b.write_bytes(b"B")
            outcome["B"] = "published"
        except OutputExistsError:
            outcome["B"] = "refused"

    monkeypatch.setattr(_atomic, "_before_publish", b_publishes)
    with atomic_output(target) as tmp:
        tmp.write_bytes(b"A")
    assert outcome == {"B": "refused"} and target.read_bytes() == b"A"
    assert _hidden(tmp_path) == []


def test_placeholder_removed_when_the_rename_fails(tmp_path, no_links, monkeypatch):
    target = tmp_path / "out.bin"

    def failing_replace(src, dst):
        raise OSError(errno.EIO, "I/O error", str(dst))

    monkeypatch.setattr(_atomic.os, "replace", failing_replace)
    with pytest.raises(OSError, match="I/O error"), atomic_output(target) as tmp:
        tmp.write_bytes(b"ours")
    assert not target.exists()  # no empty placeholder left posing as the output
    assert _hidden(tmp_path) == []
