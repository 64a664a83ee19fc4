"""The accuracy-against-size plot's legend: what each entry says, and where a long one goes."""
import matplotlib

matplotlib.use("Agg")
import pandas as pd  # noqa: E402

import planting_core as pc  # noqa: E402
from planting_core import book as pb  # noqa: E402


def points(methods: int) -> pd.DataFrame:
    """Students over 3 seeds, a planting path per seed, and `methods` one-network-per-seed methods (starred)."""
    rows = [dict(model="student CE", params=p, test_acc=0.8 + p / 1e6, seed=s) for s in range(3) for p in (1e4, 3e4)]
    rows += [dict(model="planted", params=1e4 + k * 5e3, test_acc=0.8 + k / 100, seed=s, final=k == 3)
             for s in range(3) for k in range(4)]
    rows += [dict(model=f"pruned {m}", params=2e4 + m * 1e3, test_acc=0.85, seed=s, final=True)
             for s in range(3) for m in range(methods)]
    return pd.DataFrame(rows)


def test_legend_says_lines_only_for_paths_and_has_one_neutral_star():
    ax = pb.plot_accuracy_vs_params(points(1))
    legend = ax.get_legend()
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels == ["student CE", "planted (one line per seed)", "pruned 0", "final network (its model's colour)"]
    star = legend.legend_handles[-1]
    assert star.get_marker() == "*" and matplotlib.colors.to_hex(star.get_markerfacecolor()) == "#bfbfbf"


def test_a_long_legend_goes_below_the_axes():
    short = pb.plot_accuracy_vs_params(points(1)).get_legend()
    long = pb.plot_accuracy_vs_params(points(6)).get_legend()
    assert short.get_bbox_to_anchor().y0 >= short.axes.bbox.y0  # inside the axes
    assert long.get_bbox_to_anchor().y0 < long.axes.bbox.y0  # below them, over no point
