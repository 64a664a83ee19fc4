"""Figures a reader would rather look at than read: the search, accuracy vs parameters, final widths."""
from __future__ import annotations

import ast

import matplotlib.pyplot as plt
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


def plot_accuracy_vs_params(points: pd.DataFrame, ax: plt.Axes | None = None) -> plt.Axes:
    """Test accuracy against parameter count; `points` has columns model, params, test_acc (and loss_fn)."""
    ax = ax or plt.subplots(figsize=(6, 3.5))[1]
    hue = points["model"] + ((" (" + points["loss_fn"] + ")") if "loss_fn" in points else "")
    sns.lineplot(x=points["params"], y=points["test_acc"] * 100, hue=hue, marker="o", ax=ax, errorbar="sd")
    ax.set(xscale="log", xlabel="parameters", ylabel="test accuracy (%)", title="Accuracy against size")
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
