"""Figures for the reports, as PNG bytes.

Built on matplotlib's object API (`Figure` + the Agg canvas), never pyplot: no global figure state,
no GUI backend, nothing to close, safe in a worker process. Each function takes plain arrays/rows
and returns PNG bytes; the HTML layer embeds them.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from matplotlib.ticker import MaxNLocator

DPI = 100
FOLD_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
               "#bcbd22", "#17becf")
_CJK_HINTS = ("Noto Sans CJK", "Noto Sans KR", "NanumGothic", "Nanum Gothic", "Malgun Gothic", "AppleGothic",
              "UnDotum", "Baekmuk")


def _cjk_font() -> str | None:
    """A font with Hangul glyphs, if the system has one (Korean label names otherwise show as boxes)."""
    from matplotlib import font_manager

    names = {f.name for f in font_manager.fontManager.ttflist}
    return next((n for hint in _CJK_HINTS for n in sorted(names) if n.startswith(hint)), None)


@contextlib.contextmanager
def _style() -> Iterator[None]:
    import matplotlib

    cjk = _cjk_font()
    rc: dict[str, Any] = {"font.size": 9, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
          "axes.spines.right": False}
    if cjk:
        rc["font.family"] = [cjk, "DejaVu Sans"]
    # matplotlib's stubs accept only literal rc keys, not a dict built at run time
    with matplotlib.rc_context(rc), warnings.catch_warnings():  # type: ignore[arg-type]
        warnings.filterwarnings("ignore", message="Glyph .* missing")
        yield


def _figure(w: float, h: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=DPI, layout="constrained")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    return buf.getvalue()


def learning_curves(rows: Sequence[dict]) -> bytes:
    """Per-fold curves over epochs: train/valid loss, micro-F1, AUPRC (from metrics.jsonl rows)."""
    with _style():
        fig = _figure(12, 3.6)
        axes = fig.subplots(1, 3)
        folds = sorted({r.get("fold", 0) for r in rows})
        for i, k in enumerate(folds):
            color = FOLD_COLORS[i % len(FOLD_COLORS)]
            fr = sorted((r for r in rows if r.get("fold", 0) == k), key=lambda r: (r.get("epoch", 0), r.get("step", 0)))
            x = [r.get("epoch", 0) for r in fr]
            axes[0].plot(x, [r.get("train_loss", np.nan) for r in fr], "-", color=color, marker="o", ms=3,
                         label=f"fold {k} train")
            axes[0].plot(x, [r.get("valid_loss", np.nan) for r in fr], "--", color=color, marker="s", ms=3,
                         label=f"fold {k} valid")
            axes[1].plot(x, [r.get("micro_f1", np.nan) for r in fr], "-", color=color, marker="o", ms=3, label=f"fold {k}")
            axes[2].plot(x, [r.get("auprc", np.nan) for r in fr], "-", color=color, marker="o", ms=3, label=f"fold {k}")
        for ax, title in zip(axes, ("loss (solid: train, dashed: valid)", "valid micro-F1", "valid AUPRC")):
            ax.set_title(title)
            ax.set_xlabel("epoch")
        axes[0].legend(fontsize=7, ncol=2 if len(folds) > 2 else 1)
        axes[1].legend(fontsize=7)
        return _png(fig)


def confusion_heatmap(gold: np.ndarray, pred: np.ndarray, labels: Sequence[str]) -> bytes:
    """Row-normalised confusion matrix (rows: gold, columns: predicted) over the labels that occur."""
    from rekit.metrics import confusion

    cm = confusion(gold, pred, len(labels)).astype(np.float64)
    keep = np.flatnonzero(cm.sum(0) + cm.sum(1) > 0)
    cm = cm[np.ix_(keep, keep)]
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    names = [labels[int(i)] for i in keep]
    n = len(names)
    with _style():
        side = min(14.0, max(5.0, 0.38 * n + 3))
        fig = _figure(side + 1.0, side)
        ax = fig.subplots()
        im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1, aspect="equal")
        ax.grid(False)
        ax.set_xticks(range(n), names, rotation=70, ha="right", fontsize=7)
        ax.set_yticks(range(n), names, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("gold")
        ax.set_title("confusion matrix (each gold row sums to 1)")
        if n <= 20:
            for i in range(n):
                for j in range(n):
                    if cm[i, j]:
                        ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=6,
                                color="white" if norm[i, j] > 0.6 else "black")
        fig.colorbar(im, ax=ax, shrink=0.7)
        return _png(fig)


def per_class_f1(rows: Sequence[dict]) -> bytes:
    """Horizontal bars of per-class F1 (fractions), each annotated with its gold support."""
    rows = sorted(rows, key=lambda r: r["f1"])
    with _style():
        fig = _figure(8, max(2.5, 0.28 * len(rows) + 1.2))
        ax = fig.subplots()
        y = np.arange(len(rows))
        ax.barh(y, [r["f1"] for r in rows], color="#4c72b0")
        ax.set_yticks(y, [r["label"] for r in rows], fontsize=7)
        for yi, r in zip(y, rows):
            ax.text(min(r["f1"], 1.0) + 0.01, yi, f"n={r['support']}", va="center", fontsize=7, color="#333")
        ax.set_xlim(0, 1.15)
        ax.set_xlabel("F1 (out-of-fold)")
        ax.set_title("per-class F1 with gold support")
        return _png(fig)


def pr_curves(gold: np.ndarray, probs: np.ndarray, labels: Sequence[str], classes: Sequence[int]) -> bytes:
    """One-vs-rest precision-recall curves of `classes`, with each curve's area (KLUE's AUPRC term)."""
    from sklearn.metrics import auc, precision_recall_curve

    with _style():
        fig = _figure(7, 5)
        ax = fig.subplots()
        for i, c in enumerate(classes):
            y = (gold == c).astype(int)
            if not y.any():
                continue
            precision, recall, _ = precision_recall_curve(y, probs[:, c])
            ax.plot(recall, precision, color=FOLD_COLORS[i % len(FOLD_COLORS)], lw=1.5,
                    label=f"{labels[c]} (n={int(y.sum())}, area {auc(recall, precision):.2f})")
        ax.set_xlim(0, 1.01)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title("precision-recall, largest classes (out-of-fold)")
        ax.legend(fontsize=7, loc="lower left")
        return _png(fig)


def optimization_history(numbers: Sequence[int], values: Sequence[float], metric: str,
                         pruned: Sequence[tuple[int, float]] = ()) -> bytes:
    """Completed trials' objective values by trial number, the best so far, and pruned trials' last report."""
    with _style():
        fig = _figure(8, 4)
        ax = fig.subplots()
        if pruned:
            ax.scatter([n for n, _ in pruned], [v for _, v in pruned], marker="x", color="#999",
                       label="pruned (last reported)")
        ax.scatter(numbers, values, color="#1f77b4", zorder=3, label="complete")
        if len(values):
            order = np.argsort(numbers)
            best = np.maximum.accumulate(np.asarray(values, dtype=float)[order])
            ax.step(np.asarray(numbers)[order], best, where="post", color="#d62728", label="best so far")
        ax.set_xlabel("trial")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(metric)
        ax.set_title("optimisation history")
        ax.legend(fontsize=8)
        return _png(fig)


def param_importances(importances: dict[str, float]) -> bytes:
    items = sorted(importances.items(), key=lambda kv: kv[1])
    with _style():
        fig = _figure(7, max(2.0, 0.4 * len(items) + 1))
        ax = fig.subplots()
        ax.barh(range(len(items)), [v for _, v in items], color="#55a868")
        ax.set_yticks(range(len(items)), [k for k, _ in items])
        ax.set_xlabel("importance (share of the objective's variance)")
        ax.set_title("hyper-parameter importances (fANOVA)")
        return _png(fig)


def intermediate_values(curves: dict[int, list[tuple[int, float]]], metric: str) -> bytes:
    """Each trial's reported score per evaluation (the values the pruner compared)."""
    with _style():
        fig = _figure(8, 4)
        ax = fig.subplots()
        for number, points in sorted(curves.items()):
            ax.plot(range(1, len(points) + 1), [v for _, v in points], marker="o", ms=2, lw=1, alpha=0.8,
                    label=f"trial {number}" if len(curves) <= 10 else None)
        ax.set_xlabel("evaluation (folds in order)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(metric)
        ax.set_title("intermediate scores per trial")
        if len(curves) <= 10:
            ax.legend(fontsize=7, ncol=2)
        return _png(fig)
