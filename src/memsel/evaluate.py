"""Selection accuracy on a test split, for baselines and trained selectors, plus the results plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from memsel.data.budget import support_outside
from memsel.data.encode import EncodedSamples
from memsel.files import atomic_path
from memsel.network import Selector

METHOD_ORDER = ("random", "most_recent", "pretrained", "ppo", "ppo_tuned")
METHOD_LABELS = {
    "random": "random choice (expected)",
    "most_recent": "most recent memory",
    "pretrained": "pretrained (Lightning)",
    "ppo": "PPO fine-tuned (RLlib)",
    "ppo_tuned": "PPO, best sweep trial",
}


def _usable(data: EncodedSamples) -> np.ndarray:
    """Questions that have at least one memory (a question before any statement has none to pick)."""
    return data.mask.any(axis=1)


def baseline_scores(data: EncodedSamples) -> dict[str, dict[str, float]]:
    """``random``: the exact expectation of a uniform pick; ``most_recent``: always the newest memory."""
    ok = _usable(data)
    n_valid = data.mask.sum(1)
    random_acc = (data.support.sum(1) / np.maximum(n_valid, 1))[ok]
    last = np.maximum(n_valid - 1, 0)
    recent_acc = data.support[np.arange(len(data)), last][ok]
    return {"random": _summary(random_acc), "most_recent": _summary(recent_acc)}


@torch.no_grad()
def selector_scores(net: Selector, data: EncodedSamples, batch_size: int = 1024) -> dict[str, float]:
    """Greedy (argmax) selection accuracy of ``net`` on ``data``."""
    net.eval()
    hits = []
    tensors = {k: torch.from_numpy(v) for k, v in data.tensors().items()}
    for start in range(0, len(data), batch_size):
        batch = {k: v[start:start + batch_size] for k, v in tensors.items()}
        choice = net(batch).argmax(-1).numpy()
        hits.append(data.support[np.arange(start, start + len(choice)), choice])
    acc = np.concatenate(hits)[_usable(data)]
    return _summary(acc)


def _summary(hits: np.ndarray) -> dict[str, float]:
    return {"selection_accuracy": float(np.mean(hits)) if len(hits) else float("nan"), "questions": float(len(hits))}


def evaluate(data: EncodedSamples, selectors: dict[str, Path]) -> dict[str, dict[str, float]]:
    """Baselines plus every selector file in ``selectors`` (method name -> path), in METHOD_ORDER.

    ``data`` is the test split as the selectors see it (through the memory budget, see
    memsel.data.budget). Every method's entry also carries ``support_outside_budget`` (supporting
    facts not among the slots) and ``questions_without_support`` (questions left with none, which
    count as misses), the same for every method: what the budget hides is reported, not dropped.
    """
    results = baseline_scores(data)
    for name, path in selectors.items():
        results[name] = selector_scores(Selector.load(path), data)
    outside = {k: float(v) for k, v in support_outside(data).items()}
    for metrics in results.values():
        metrics.update(outside)
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    return dict(sorted(results.items(), key=lambda kv: order.get(kv[0], len(order))))


def format_table(results: dict[str, dict[str, float]]) -> str:
    """A plain-text table of selection accuracy per method."""
    width = max(len(METHOD_LABELS.get(m, m)) for m in results)
    lines = [f"{'method':<{width}}  selection accuracy  questions", f"{'-' * width}  ------------------  ---------"]
    for m, v in results.items():
        lines.append(f"{METHOD_LABELS.get(m, m):<{width}}  {v['selection_accuracy'] * 100:17.1f}%  {int(v['questions']):9d}")
    first = next(iter(results.values()), {})
    if first.get("support_outside_budget", 0) > 0:
        lines.append(f"{int(first['support_outside_budget'])} supporting facts lie outside the memory budget; "
                     f"{int(first.get('questions_without_support', 0))} questions have none inside (counted as misses)")
    return "\n".join(lines)


def plot_results(results: dict[str, dict[str, float]], curve: list[dict[str, float]], path: Path,
                 title: str) -> Path:
    """Bar chart of test accuracy per method, next to the PPO learning curve (return, KLs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = list(results)
    accs = [results[m]["selection_accuracy"] * 100 for m in names]
    bars = ax1.barh([METHOD_LABELS.get(m, m) for m in names], accs, color="#4C72B0")
    ax1.bar_label(bars, fmt="%.1f%%", padding=3)
    ax1.set_xlim(0, 110)
    ax1.invert_yaxis()
    ax1.set_xlabel("test selection accuracy (%)")
    ax1.set_title("Which memory did it pick?")
    if curve:
        steps = [r["env_steps"] for r in curve]
        ax2.plot(steps, [r.get("return", np.nan) for r in curve], "o-", label="episode return (train)")
        ax2.set_xlabel("env steps")
        ax2.set_ylabel("return")
        ax2.set_ylim(0, 1.05)
        ax3 = ax2.twinx()
        ax3.plot(steps, [r.get("mean_kl_loss", np.nan) for r in curve], "s--", color="#C44E52", label="PPO KL")
        ax3.plot(steps, [r.get("distill_kl", np.nan) for r in curve], "^--", color="#55A868",
                 label="KL to teacher")
        ax3.set_ylabel("KL")
        lines = ax2.get_lines() + ax3.get_lines()
        ax2.legend(lines, [ln.get_label() for ln in lines], loc="center right", fontsize="small")
        ax2.set_title("PPO fine-tuning")
    else:
        ax2.set_axis_off()
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path
