"""The orientation plan is built in blocks of zone axes with progress (UX point 19), and the job
gives the same plan as the eager function."""

import numpy as np

from napari_4dstem.analysis.acom.plan import build_orientation_plan, iter_build_orientation_plan
from napari_4dstem.analysis.crystal.structure import bundled_crystal
from napari_4dstem.engine.jobs import Progress, run_job
from napari_4dstem.pipelines import ACOMParams, iter_plans


def test_plan_build_reports_progress_and_equals_the_eager_plan():
    au = bundled_crystal("Au")
    kw = dict(energy_kev=300.0, k_max_inv_A=1.2, step_deg=2.0)
    steps: list[Progress] = []
    plan = run_job(iter_build_orientation_plan(au, **kw), steps.append)
    assert len(steps) >= 8  # about 16 blocks of zone axes
    done = [p.done for p in steps]
    assert done == sorted(done) and steps[-1].done == steps[-1].total == plan.n_zones
    ref = build_orientation_plan(au, **kw)
    np.testing.assert_array_equal(plan.zone_axes, ref.zone_axes)
    for field in ("zone_orientations", "template_offsets", "spot_angle", "spot_weight", "template_norm"):
        np.testing.assert_array_equal(getattr(plan, field), getattr(ref, field))
    # the pipeline's plans job passes the blocks on, over all crystals
    outer: list[Progress] = []
    plans = run_job(iter_plans(ACOMParams(crystals=("Au", "Cu")), 300.0, 1.2), outer.append)
    assert len(plans) == 2 and len(outer) >= 16
    fr = [p.done / p.total for p in outer]
    assert fr == sorted(fr) and fr[-1] == 1.0 and any(0.4 < f < 0.6 for f in fr)
