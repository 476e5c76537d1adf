"""Session 12 (#17): ``precision`` through NNDiskParams, recipes, the command line and the NN
dock (the library's ``find_bragg_disks_nn(precision=...)`` existed since session 11)."""

import numpy as np
import pytest

from napari_4dstem.cli import build_parser, main
from napari_4dstem.nn.precision import DEFAULT_PRECISION, PRECISIONS
from napari_4dstem.pipelines import NNDiskParams, Recipe
from napari_4dstem.pipelines.params import ParameterError


def test_precision_is_a_validated_field_that_round_trips():
    assert NNDiskParams().precision == DEFAULT_PRECISION and set(PRECISIONS) == {"float32", "bfloat16"}
    for prec in PRECISIONS:
        p = NNDiskParams(precision=prec, min_relative=0.2)
        assert NNDiskParams.from_dict(p.to_dict()) == p
        assert p.nn_kwargs()["precision"] == prec
    other = "bfloat16" if DEFAULT_PRECISION == "float32" else "float32"
    assert "precision" in NNDiskParams(precision=other).changed()
    assert f"precision={other!r}" in NNDiskParams(precision=other).script()
    for bad in ("half", "float16", "Float32", None, 32):
        with pytest.raises(ParameterError, match="precision must be one of 'float32', 'bfloat16'"):
            NNDiskParams(precision=bad)


def test_a_recipe_saved_before_precision_replays_in_float32():
    """Recipes written before the field existed ran the float32 network: they must replay so,
    whatever the default becomes. Saved now, the field is written, so it round-trips."""
    old_nn = {k: v for k, v in NNDiskParams().to_dict().items() if k != "precision"}
    assert NNDiskParams.from_dict(old_nn).precision == "float32"
    old = {
        "workflow": "disks",
        "input": {"path": "scan.h5", "kind": "datacube"},
        "params": {"nn": old_nn, "probe": {"path": "scan.h5", "node": "probe"}},
        "software_version": "0.11.0",
        "created_utc": "2026-12-01T00:00:00Z",
    }
    r = Recipe.from_dict(old)
    assert r.params["nn"].precision == "float32"
    assert r.params["nn"] == NNDiskParams(precision="float32")
    for prec in PRECISIONS:
        new = Recipe.from_dict({**old, "params": {**old["params"], "nn": NNDiskParams(precision=prec).to_dict()}})
        assert Recipe.from_dict(new.to_dict()).params["nn"].precision == prec


def test_cli_precision_flags_parse_into_the_params():
    from napari_4dstem.cli import _nn_params

    parser = build_parser()
    a = parser.parse_args(["infer", "in.h5", "out.h5", "--probe", "p.npy", "--precision", "bfloat16"])
    assert a.precision == "bfloat16"
    assert parser.parse_args(["infer", "in.h5", "out.h5", "--probe", "p.npy"]).precision is None  # the default
    strain = ["strain", "in.h5", "out.h5", "--method", "nn", "--probe", "p.npy"]
    assert _nn_params(parser.parse_args([*strain, "--precision", "bfloat16"])).precision == "bfloat16"
    assert _nn_params(parser.parse_args(strain)).precision == DEFAULT_PRECISION
    sub = next(act for act in parser._actions if isinstance(getattr(act, "choices", None), dict))
    infer = sub.choices["infer"]
    assert f"default {DEFAULT_PRECISION}" in " ".join(infer.format_help().split())


def test_cli_rejects_an_unknown_precision(capsys):
    with pytest.raises(SystemExit) as e:
        main(["infer", "in.h5", "out.h5", "--probe", "p.npy", "--precision", "half"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--precision" in err and "'float32', 'bfloat16'" in err


def test_cli_infer_runs_and_records_the_precision(tmp_path):
    """`infer --precision bfloat16`: the peaks say bfloat16 ran, and their recipe replays it."""
    pytest.importorskip("torch")
    from napari_4dstem.nn.infer import native_bfloat16

    if not native_bfloat16():
        pytest.skip("this CPU has no native bfloat16: both precisions run float32 here")
    from napari_4dstem.io import emd
    from napari_4dstem.simulation.samples import make_strained_crystal

    s = make_strained_crystal(scan_shape=(2, 3))
    src = tmp_path / "in.h5"
    emd.write(src, *s.objects())
    got = {}
    for prec in PRECISIONS:
        out = tmp_path / f"{prec}.h5"
        assert main(["-q", "infer", str(src), str(out), "--probe", f"{src}:probe", "--precision", prec]) == 0
        bp = next(v for k, v in emd.read(out).items() if k.endswith("braggpeaks_nn"))
        assert bp.params["precision"] == prec
        assert Recipe.from_dict(bp.params["recipe"]).params["nn"].precision == prec
        got[prec] = bp
    # the same disks either way (to hundredths of a pixel, docs/nn.md)
    a, b = got["float32"], got["bfloat16"]
    for iy in range(2):
        for ix in range(3):
            pa, pb = a.at(iy, ix), b.at(iy, ix)
            assert len(pa["qy"]) == len(pb["qy"])
            ya, yb = np.stack([pa["qy"], pa["qx"]], 1), np.stack([pb["qy"], pb["qx"]], 1)
            assert np.linalg.norm(ya[:, None] - yb[None], axis=-1).min(1).max() < 0.5


def test_preview_runs_in_the_asked_precision():
    """``predict_pattern`` (the docks' preview) follows ``precision`` as the whole-scan run does."""
    pytest.importorskip("torch")
    from napari_4dstem.nn.infer import native_bfloat16

    if not native_bfloat16():
        pytest.skip("this CPU has no native bfloat16: both precisions run float32 here")
    from napari_4dstem.pipelines import detect_pattern_nn
    from napari_4dstem.simulation.samples import make_strained_crystal

    s = make_strained_crystal(scan_shape=(1, 1))
    pat = np.asarray(s.datacube.data[0, 0])
    img32, rows32 = detect_pattern_nn(pat, np.asarray(s.probe.data), NNDiskParams(precision="float32"))
    img16, rows16 = detect_pattern_nn(pat, np.asarray(s.probe.data), NNDiskParams(precision="bfloat16"))
    assert img32.params["precision"] == "float32" and img16.params["precision"] == "bfloat16"
    assert not np.array_equal(img32.data, img16.data)  # bfloat16 did run
    assert np.abs(img32.data - img16.data).max() <= 0.05 * np.abs(img32.data).max()
    assert len(rows32) == len(rows16)


def test_bfloat16_is_the_default_where_the_cpu_has_it_else_float32(monkeypatch):
    """Session 12 made bfloat16 the default (held-out strain and recall within the rule fixed
    beforehand, docs/nn.md); a CPU without native bfloat16 runs float32 and says so."""
    pytest.importorskip("torch")
    from napari_4dstem.nn import infer
    from napari_4dstem.simulation.samples import make_strained_crystal

    assert DEFAULT_PRECISION == "bfloat16" and NNDiskParams().precision == "bfloat16"
    s = make_strained_crystal(scan_shape=(1, 2))

    def ran(**kw):
        return infer.find_bragg_disks_nn(s.datacube, probe=s.probe, check_domain=False, **kw).params["precision"]

    assert ran() == ("bfloat16" if infer.native_bfloat16() else "float32")
    monkeypatch.setattr(infer, "native_bfloat16", lambda: False)
    assert ran(precision="bfloat16") == ran(precision="auto") == ran() == "float32"
