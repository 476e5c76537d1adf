"""The command line's progress: tqdm bars where tqdm is installed, a text bar otherwise; a bar an
error stops ends its line before the error message."""

import io

import numpy as np
import pytest

from napari_4dstem import cli
from napari_4dstem._cli_common import ProgressBar, close_bars
from napari_4dstem.engine.jobs import Progress
from napari_4dstem.errors import Napari4DSTEMError
from napari_4dstem.io import emd


def test_text_bar_one_line_per_stage():
    out = io.StringIO()
    bar = ProgressBar(out, use_tqdm=False)
    for p in [
        Progress(0, 3, "virtual images"),
        Progress(3, 3, "virtual images"),
        Progress(0, 2, "mean pattern"),
        Progress(2, 2, "mean pattern"),
    ]:
        bar(p)
    empty, full = "-" * 30, "#" * 30
    assert out.getvalue() == (
        f"\rvirtual images               [{empty}] 0/3\rvirtual images               [{full}] 3/3\n"
        f"\rmean pattern                 [{empty}] 0/2\rmean pattern                 [{full}] 2/2\n"
    )
    ProgressBar(out, enabled=False)(Progress(1, 2, "quiet"))
    assert "quiet" not in out.getvalue()


def test_tqdm_bar_per_stage_with_counts():
    pytest.importorskip("tqdm")
    out = io.StringIO()
    bar = ProgressBar(out)
    assert bar.use_tqdm  # the default where tqdm is installed
    for k in range(5):
        bar(Progress(k, 4, "virtual images"))
    for k in range(3):
        bar(Progress(k, 2, "mean pattern"))
    lines = out.getvalue().split("\n")
    # each stage ends on its own line, in its final state
    assert lines[0].rsplit("\r", 1)[-1].startswith("virtual images: 100%")
    assert "| 4/4 [" in lines[0]
    assert lines[1].rsplit("\r", 1)[-1].startswith("mean pattern: 100%")
    assert "| 2/2 [" in lines[1]
    assert lines[2] == ""


def test_tqdm_status_messages_stay_on_one_bar():
    # training reports its loss in every step's message: one bar, the latest status on it
    pytest.importorskip("tqdm")
    out = io.StringIO()
    bar = ProgressBar(out, use_tqdm=True)
    for k, loss in enumerate([0.9, 0.5, 0.25]):
        bar(Progress(k + 1, 3, f"epoch 1 loss {loss}"))
    lines = out.getvalue().split("\n")
    assert len(lines) == 2 and lines[1] == ""
    assert lines[0].rsplit("\r", 1)[-1].startswith("epoch 1 loss 0.25: 100%")


@pytest.mark.parametrize("use_tqdm", [False, True])
def test_close_bars_ends_a_stopped_bar(use_tqdm):
    if use_tqdm:
        pytest.importorskip("tqdm")
    out = io.StringIO()
    bar = ProgressBar(out, use_tqdm=use_tqdm)
    bar(Progress(2, 5, "bragg disks"))
    assert not out.getvalue().endswith("\n")
    close_bars()
    text = out.getvalue()
    assert text.endswith("\n") and "2/5" in text.rsplit("\r", 1)[-1]
    close_bars()  # once only
    assert out.getvalue() == text


def test_an_error_message_starts_on_its_own_line(monkeypatch, capsys):
    def add_boom(sub):
        return sub.add_parser("boom")

    def run_boom(args):
        bar = ProgressBar(enabled=not args.quiet)
        bar(Progress(1, 4, "reading"))
        raise Napari4DSTEMError("scan.h5: truncated at pattern 2")

    monkeypatch.setitem(cli.SUBCOMMANDS, "boom", (add_boom, run_boom))
    assert cli.main(["boom"]) == 2
    err = capsys.readouterr().err
    assert err.endswith("\nnapari-4dstem boom: error: scan.h5: truncated at pattern 2\n")
    assert "1/4" in err.split("\n")[0]


def test_convert_shows_its_progress(tmp_path, small_cube, capsys):
    src = emd.write(tmp_path / "a.h5", small_cube)
    assert cli.main(["convert", str(src), str(tmp_path / "b.h5")]) == 0
    err = capsys.readouterr().err
    with emd.read_datacube(tmp_path / "b.h5") as dc:
        np.testing.assert_array_equal(dc.data[()], np.asarray(small_cube.data))
    last = err.rstrip("\n").split("\n")[-1].rsplit("\r", 1)[-1]
    assert ("100%" in last) if ProgressBar().use_tqdm else ("#" * 30 in last)
