"""The report's figures drawn from MLflow histories: learning curves across trials and seeds, PBT's
hyperparameter schedules, and the haystack table as a heatmap. Each function writes one PNG and returns
its path (or None when there is nothing to draw)."""

from __future__ import annotations

from pathlib import Path

from memsel.files import atomic_path
from memsel.reporting.collect import HP_PREFIX, RunRecord

PANELS = {
    "return": ("episode return (train)", (0.0, 1.05)),
    "val_accuracy": ("validation selection accuracy", (0.0, 1.05)),
    "ppo_kl": ("PPO's KL (old || new policy)", None),
    "distill_kl": ("distillation KL (teacher || student)", None),
    "distill_weight": ("distillation weight", None),
    "train_loss": ("training loss", None),
    "val_loss": ("validation loss", None),
}
"""Curve name -> (panel title, fixed y range or None)."""
DPI = 110


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path) -> Path:
    """Write ``fig`` to ``path`` (complete or not at all) and close it."""
    plt = _plt()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")
    plt.close(fig)
    return path


def seed_colors(runs: list[RunRecord]) -> dict[str, str]:
    """One colour per seed (tab10, in seed order)."""
    from memsel.reporting.collect import _seed_key

    seeds = sorted({r.seed for r in runs}, key=_seed_key)
    return {s: f"C{i % 10}" for i, s in enumerate(seeds)}


def _grid(n: int, width: float = 4.4, height: float = 3.2):
    plt = _plt()
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows + 0.9), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_axis_off()
    return fig, flat[:n], flat[n:]


def curves(runs: list[RunRecord], names: list[str], path: Path, title: str, xlabel: str) -> Path | None:
    """One panel per curve in ``names`` that some run has; one line per run, coloured by seed when there are
    several seeds, else by run (thin lines when there are many, as for a big sweep). None when no run has
    any of them."""
    from matplotlib.ticker import MaxNLocator

    names = [n for n in names if any(r.histories.get(n) for r in runs)]
    if not names:
        return None
    by_seed = len({r.seed for r in runs}) > 1
    colors = seed_colors(runs) if by_seed else {}
    many = len(runs) > 8
    fig, axes, spare = _grid(len(names))
    for ax, name in zip(axes, names):
        text, ylim = PANELS.get(name, (name, None))
        for i, r in enumerate(runs):
            points = r.histories.get(name) or []
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, "-" if many else ".-", color=colors[r.seed] if by_seed else f"C{i % 10}",
                        lw=1.0 if many else 1.6, alpha=0.75 if many else 0.9, label=_label(r, by_seed))
        ax.set_title(text, fontsize="medium")
        ax.set_xlabel(xlabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ylim:
            ax.set_ylim(*ylim)
        ax.grid(alpha=0.3)
    _finish(fig, axes, spare, runs, colors if many and by_seed else {}, title)
    return save(fig, path)


def _label(r: RunRecord, seeds: bool) -> str:
    """A line's legend entry: seed (when several), run label, and a trial's sampled values."""
    values = ", ".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in sorted(r.params.items()))
    text = f"seed {r.seed} · {r.label}" if seeds else r.label
    return f"{text} ({values})" if values else text


def _short(v: str) -> str:
    try:
        return f"{float(v):.3g}"
    except ValueError:
        return v


def _finish(fig, axes, spare, runs: list[RunRecord], seed_colours: dict[str, str], title: str) -> None:
    """Legend, title, layout. With ``seed_colours`` (many lines) a legend by seed, else one entry per line;
    in the grid's free cell when there is one, else to the right of the panels. A single line needs none."""
    from matplotlib.lines import Line2D

    if seed_colours:
        handles = [Line2D([], [], color=c, label=f"seed {s} ({sum(r.seed == s for r in runs)} runs)")
                   for s, c in seed_colours.items()]
    else:
        handles, seen = [], set()
        for ax in axes:
            for line in ax.get_lines():
                if line.get_label() not in seen:
                    seen.add(line.get_label())
                    handles.append(line)
    fig.suptitle(title)
    if len(handles) <= 1:
        fig.tight_layout()
    elif spare:
        spare[0].legend(handles=handles, loc="center", fontsize="small", frameon=False)
        fig.tight_layout()
    else:
        fig.legend(handles=handles, loc="center right", fontsize="small", frameon=False)
        fig.tight_layout(rect=(0, 0, 0.8, 1))


def pbt_schedules(trials: list[RunRecord], path: Path, title: str) -> Path | None:
    """PBT's hyperparameter schedules: per searched field, every trial's value at each iteration (steps
    where PBT copied another trial and perturbed its values show as jumps). None without ``hp/`` metrics."""
    from matplotlib.ticker import MaxNLocator

    keys = sorted({k for r in trials for k in r.histories if k.startswith(HP_PREFIX)})
    if not keys:
        return None
    colors = {r.run_id: f"C{i % 10}" for i, r in enumerate(trials)}
    fig, axes, spare = _grid(len(keys))
    for ax, key in zip(axes, keys):
        values = []
        for r in trials:
            points = r.histories.get(key) or []
            if points:
                xs, ys = zip(*points)
                values += ys
                ax.step(xs, ys, where="post", color=colors[r.run_id], label=_label(r, len({t.seed for t in trials}) > 1))
        if values and min(values) > 0 and max(values) / min(values) > 10:
            ax.set_yscale("log")
        ax.set_title(key[len(HP_PREFIX):], fontsize="medium")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("training iteration")
        ax.grid(alpha=0.3)
    _finish(fig, axes, spare, trials, {}, title)
    return save(fig, path)


def haystack_heatmap(tables: dict[str, dict], path: Path, title: str) -> Path | None:
    """One panel per method: rows task, columns length, cells the median selection accuracy (%) over seeds,
    with the number of seeds in the title. ``tables``: method -> {"tasks", "lengths", "values" (rows x
    columns, None where missing), "seeds"} (memsel.reporting.haystack.median_tables)."""
    if not tables:
        return None
    import numpy as np

    plt = _plt()
    n = len(tables)
    first = next(iter(tables.values()))
    cell_w = 0.75 * max(len(first["lengths"]), 2)
    fig, axes = plt.subplots(1, n, figsize=(max(cell_w + 1.6, 3.6) * n + 1.0, 0.55 * len(first["tasks"]) + 2.4),
                             squeeze=False, layout="constrained")
    for ax, (method, t) in zip(axes[0], tables.items()):
        grid = np.array([[np.nan if v is None else 100 * v for v in row] for row in t["values"]], dtype=float)
        im = ax.imshow(grid, vmin=0, vmax=100, cmap="viridis", aspect="auto")
        for (i, j), v in np.ndenumerate(grid):
            ax.text(j, i, "-" if np.isnan(v) else f"{v:.0f}", ha="center", va="center", fontsize="small",
                    color="black" if v == v and v > 60 else "white")
        ax.set_xticks(range(len(t["lengths"])), [str(x) for x in t["lengths"]])
        ax.set_yticks(range(len(t["tasks"])), [f"task {x}" for x in t["tasks"]])
        ax.set_xlabel("memories (haystack length)")
        ax.set_title(f"{method} (median of {t['seeds']} seed{'s' if t['seeds'] != 1 else ''})", fontsize="medium")
    fig.colorbar(im, ax=list(axes[0]), shrink=0.8, label="selection accuracy (%)")
    fig.suptitle(title)
    return save(fig, path)
