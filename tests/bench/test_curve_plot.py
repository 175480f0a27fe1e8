"""The plotted learning curve follows the tables' rule: each run interpolated onto a common
fraction grid, then mean and 95 % band over runs, never beyond a run's own range."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.axes import Axes
from scipy import stats as sps

from activesynth.bench import stats
from activesynth.bench.report import plot_curves

# two seeds of one strategy whose rounds reach different label fractions (seed 1 skips 0.2)
RUNS = {
    0: ((0.1, 0.2, 0.3), (0.5, 0.7, 0.8)),
    1: ((0.1, 0.3, 0.4), (0.5, 0.8, 0.85)),
}


def _rows(runs: dict[int, tuple[tuple[float, ...], tuple[float, ...]]]) -> list[dict[str, Any]]:
    return [
        {
            "run_id": f"a-{seed}",
            "dataset": "toy",
            "strategy": "a",
            "seed": seed,
            "schedule": "s",
            "task": "seg",
            "round": r,
            "n_labelled": round(f * 100),
            "fraction": f,
            "dice_patient_tumour": v,
        }
        for seed, (fs, vs) in runs.items()
        for r, (f, v) in enumerate(zip(fs, vs, strict=True))
    ]


def _plotted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, group: dict[str, Any], x_axis: str = "labels"
) -> dict:
    """What plot_curves hands to matplotlib: the line's (x, y) and the band's (x, lo, hi)."""
    got: dict[str, Any] = {}
    line, band = Axes.plot, Axes.fill_between

    def plot(self: Axes, x: Any, y: Any, *a: Any, **kw: Any) -> Any:
        got["line"] = (np.asarray(x, float), np.asarray(y, float))
        return line(self, x, y, *a, **kw)

    def fill(self: Axes, x: Any, lo: Any, hi: Any, *a: Any, **kw: Any) -> Any:
        got["band"] = (np.asarray(x, float), np.asarray(lo, float), np.asarray(hi, float))
        return band(self, x, lo, hi, *a, **kw)

    ylim = Axes.set_ylim

    def set_ylim(self: Axes, *a: Any, **kw: Any) -> Any:
        if len(a) == 2:  # ours (matplotlib calls it too, with one tuple)
            got["ylim"] = a
        return ylim(self, *a, **kw)

    monkeypatch.setattr(Axes, "set_ylim", set_ylim)
    monkeypatch.setattr(Axes, "plot", plot)
    monkeypatch.setattr(Axes, "fill_between", fill)
    plot_curves(group, "dice_patient_tumour", tmp_path / "c.png", ["a"], x_axis)
    assert (tmp_path / "c.png").stat().st_size > 0
    return got


def test_plotted_curve_interpolates_each_run_before_averaging(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    g = stats.summarise_group(_rows(RUNS), fractions=[0.25])
    got = _plotted(monkeypatch, tmp_path, g)
    x, y = got["line"]
    # the grid: both runs' fractions inside the range both cover (0.1 to 0.3), in percent;
    # nothing past 0.3, where seed 0 has no round (no extrapolation), and the table's 25 %
    assert x == pytest.approx([10.0, 20.0, 25.0, 30.0])
    a = [np.interp(f, *RUNS[0]) for f in (0.1, 0.2, 0.25, 0.3)]
    b = [np.interp(f, *RUNS[1]) for f in (0.1, 0.2, 0.25, 0.3)]
    assert y == pytest.approx((np.array(a) + np.array(b)) / 2)
    # the curve at the table's fraction is the table's cell
    assert y[2] == pytest.approx(g["table"]["cells"]["a"]["dice_patient_tumour"][0]["mean"])
    # band: 95 % t-interval of the mean over the 2 runs
    bx, lo, hi = got["band"]
    half = sps.t.ppf(0.975, 1) * np.std([a, b], axis=0, ddof=1) / np.sqrt(2)
    assert bx == pytest.approx(x)
    assert lo == pytest.approx(y - half) and hi == pytest.approx(y + half)
    # with 2 runs the band is wide (t = 12.7): the y-axis spans the runs' values, not the band
    y0, y1 = got["ylim"]
    assert y0 <= min(a + b) and y1 >= max(a + b) and y0 > lo.min() and y1 < hi.max()


def test_plotted_curve_on_the_physics_call_axis_and_with_one_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    g = stats.summarise_group(_rows({0: RUNS[0]}))
    got = _plotted(monkeypatch, tmp_path, g)
    assert got["line"][0] == pytest.approx([10.0, 20.0, 30.0])
    assert got["line"][1] == pytest.approx(RUNS[0][1])
    # one run: no band (a band needs two runs), drawn as the line itself
    assert got["band"][1] == pytest.approx(RUNS[0][1]) and got["band"][2] == pytest.approx(
        RUNS[0][1]
    )
    # physics calls: x is each run's label count interpolated at the grid, averaged over runs
    g = stats.summarise_group(_rows(RUNS))
    x = _plotted(monkeypatch, tmp_path, g, "oracle_calls")["line"][0]
    assert x == pytest.approx([10.0, 20.0, 25.0, 30.0])  # the default table fractions: 25 %
