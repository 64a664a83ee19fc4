"""Figures a reader would rather look at than read: the search, accuracy vs parameters, final widths."""
from __future__ import annotations

import ast

import matplotlib.pyplot as plt
from matplotlib.lines import Line2D
import pandas as pd
import seaborn as sns


def plot_search(history: pd.DataFrame, ax: plt.Axes | None = None) -> plt.Axes:
    """Validation loss of every candidate per round (one colour per planted layer); kept networks ringed."""
    ax = ax or plt.subplots(figsize=(6, 3.5))[1]
    cands = history[history["layer"].notna()].copy()
    cands["planted layer"] = "conv" + (cands["layer"].astype(int) + 1).astype(str)
    sns.lineplot(data=cands, x="round", y="val_loss", hue="planted layer", marker="o", ax=ax)
    kept = history[history["chosen"]]
    ax.plot(kept["round"], kept["val_loss"], "k--", lw=1, label="kept network")
    ax.scatter(kept["round"], kept["val_loss"], s=120, facecolors="none", edgecolors="k")
    ax.set(xlabel="planting round", ylabel="validation loss", title="Which layer to plant, round by round")
    ax.legend(fontsize=8)
    return ax


def log_params_axis(ax: plt.Axes) -> None:
    """A log x axis of parameter counts, labelled 10K, 20K, 50K, 100K, ... (minor ticks unlabelled)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:g}K" if v >= 1000 else f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())  # labels on minor ticks overprinted each other


def plot_accuracy_vs_params(points: pd.DataFrame, ax: plt.Axes | None = None) -> plt.Axes:
    """Test accuracy against parameter count (log axis).

    `points` has columns model, params, test_acc, and optionally seed and final. Fixed-width students (model
    starting with "student") are one line per model, mean ± std over seeds; every other model (planting
    rounds) is one line per seed, and rows with final=True (the grown networks) are starred.
    """
    ax = ax or plt.subplots(figsize=(6.5, 3.8))[1]
    points = points.assign(acc=points["test_acc"] * 100)
    students = points["model"].str.startswith("student")
    palette = dict(zip(points["model"].unique(), sns.color_palette(n_colors=points["model"].nunique())))
    if students.any():
        sns.lineplot(data=points[students], x="params", y="acc", hue="model", palette=palette, marker="o",
                     errorbar="sd", ax=ax)
    has_seeds = "seed" in points
    for (model, seed), run in points[~students].groupby(["model", points.get("seed", 0)], sort=False):
        run = run.sort_values("params")
        first = seed == points.loc[points["model"] == model, "seed"].min() if has_seeds else True
        lines = has_seeds and len(run) > 1  # a model of one network per seed is a point per seed, not a line
        ax.plot(run["params"], run["acc"], marker=".", lw=1, alpha=0.7, color=palette[model],
                label=(f"{model} (one line per seed)" if lines else model) if first else None)
        if "final" in run:
            ends = run[run["final"].astype(bool)]
            ax.scatter(ends["params"], ends["acc"], marker="*", s=160, color=palette[model], edgecolors="k", zorder=3)
    handles, _ = ax.get_legend_handles_labels()
    if "final" in points and points.loc[~students, "final"].astype(bool).any():  # one neutral star explains all
        handles.append(Line2D([], [], ls="", marker="*", markersize=13, markerfacecolor="0.75", markeredgecolor="k",
                              label="final network (its model's colour)"))
    below = dict(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)  # under the x label, as wide as the axes
    ax.legend(handles=handles, fontsize=8, **(below if len(handles) > 6 else {}))  # a long one would hide points
    log_params_axis(ax)
    ax.set(xlabel="parameters (log scale)", ylabel="test accuracy (%)", title="Accuracy against size")
    return ax


def plot_widths(widths: list[int] | str, initial: list[int] | str | None = None, ax: plt.Axes | None = None) -> plt.Axes:
    """Bar chart of the final width per conv layer (and the initial widths for comparison)."""
    ax = ax or plt.subplots(figsize=(5, 3))[1]
    parse = (lambda w: ast.literal_eval(w) if isinstance(w, str) else list(w))
    names = [f"conv{i + 1}" for i in range(5)]
    df = pd.DataFrame({"layer": names, "planted": parse(widths)})
    if initial is not None:
        df["initial"] = parse(initial)
    df.set_index("layer").plot.bar(ax=ax, rot=0)
    ax.set(ylabel="channels", title="Width per layer")
    return ax


def plot_planting_diagram(widths: list[int], layer: int, channels: int, ax: plt.Axes | None = None) -> plt.Axes:
    """One planting step drawn: frozen channels grey, the planted filters and the next layer's new inputs green.

    Each conv is a column of `widths[i]` squares (one per channel); conv `layer` (0-based) gets `channels` new
    squares on top, and green lines show the next layer (a conv, or fc1 after conv5) reading them.
    """
    from matplotlib.patches import Rectangle
    ax = ax or plt.subplots(figsize=(8, 3.6))[1]
    grey, green = "#b8b8b8", "#2ca02c"
    tall = max(widths) + channels
    xs = list(range(len(widths))) + [len(widths)]  # the five convs, then fc1
    for i, w in enumerate(widths):
        for c in range(w):
            ax.add_patch(Rectangle((xs[i] - 0.15, c), 0.3, 0.8, color=grey))
        if i == layer:
            for c in range(w, w + channels):
                ax.add_patch(Rectangle((xs[i] - 0.15, c), 0.3, 0.8, color=green))
        ax.text(xs[i], -1.2, f"conv{i + 1}\n{w}" + (f"+{channels}" if i == layer else ""), ha="center", va="top")
    ax.add_patch(Rectangle((xs[-1] - 0.15, 0), 0.3, tall, facecolor=grey, edgecolor="white", hatch="//"))
    ax.text(xs[-1], -1.2, "fc1\n(+fc2)", ha="center", va="top")
    nxt_top = widths[layer + 1] if layer + 1 < len(widths) else tall
    for c in range(widths[layer], widths[layer] + channels):  # new channels feed every unit of the next layer
        for target in (0.45, nxt_top - 0.55):
            ax.plot([xs[layer] + 0.15, xs[layer + 1] - 0.15], [c + 0.45, target], color=green, lw=0.8)
    ax.text(xs[layer] - 0.22, widths[layer] + channels / 2, "new filters\n(trained)", ha="right", va="center",
            color=green, fontweight="bold")
    ax.text((xs[layer] + xs[layer + 1]) / 2, tall + 0.8, "new input weights\n(start at 0, trained)", ha="center",
            va="bottom", color=green, fontweight="bold")
    ax.set(xlim=(-0.7, xs[-1] + 0.7), ylim=(-4, tall + 5), title="One planting step: grey is frozen, green is new")
    ax.axis("off")
    return ax


def plot_comparison(table: pd.DataFrame, ax: plt.Axes | None = None) -> plt.Axes:
    """Every method's networks (comparison.comparison_table: mean ± std over seeds) by test accuracy against
    parameter count (log axis): students as lines, every other method as points with error bars."""
    ax = ax or plt.subplots(figsize=(8, 4.6))[1]
    methods = list(table["method"].unique())
    palette = dict(zip(methods, sns.color_palette("tab10", n_colors=len(methods))))
    markers = dict(zip(methods, "os^DvP*Xhp" * 2))
    for method, part in table.groupby("method", sort=False):
        part = part.sort_values("params")
        line = "-" if method.startswith("student") else "none"
        ax.errorbar(part["params"], part["acc"] * 100, yerr=part["acc_std"].fillna(0) * 100, ls=line,
                    marker=markers[method], ms=6, capsize=2, color=palette[method], label=method, alpha=0.85)
    log_params_axis(ax)
    ax.set(xlabel="parameters (log scale)", ylabel="test accuracy (%), mean ± std over seeds",
           title="Every method: accuracy against size")
    ax.legend(fontsize=8, loc="lower right")
    return ax
