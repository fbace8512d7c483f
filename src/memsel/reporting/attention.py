"""What a selector attended to: for a few test questions, its distribution over the memories at each hop
(greedy, as the evaluation runs it: the argmax is chosen and passed on in ``selected``), drawn as a heatmap
with the memory text readable, the true supporting facts marked and the chosen memory outlined."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from memsel.data.encode import EncodedSamples
from memsel.network import Selector

SHOWN = (("pretrained", "pretrain", "pretrained"), ("ppo", "ppo", "PPO + distill."), ("ppo_tuned", "tune", "best sweep trial"))
"""(method, run-directory folder of its selector.pt, column title), in the order the columns show them."""
MAX_MEMORIES = 14
"""Questions with more memories than this are shown only when there are no shorter ones (labels stay readable)."""


@dataclass
class StoryAttention:
    """One test question and what each selector attended to, over its memories (oldest first)."""

    index: int
    query: str
    answer: str
    memories: list[str]
    support: list[int]
    """Slots (rows) holding a supporting fact."""
    why: str
    """Why this question was picked (shown in the caption)."""
    probs: dict[str, np.ndarray] = field(default_factory=dict)
    """Column title -> (H, n) selection probabilities per hop."""
    chosen: dict[str, list[int]] = field(default_factory=dict)
    """Column title -> the slot chosen at each hop."""


def words(ids: np.ndarray, tokens: list[str] | None) -> str:
    """Token ids back to text (padding dropped); without a vocabulary, the ids."""
    ids = [int(i) for i in ids if int(i) > 0]
    if tokens is None:
        return " ".join(map(str, ids))
    return " ".join(tokens[i] if i < len(tokens) else "<unk>" for i in ids)


@torch.no_grad()
def hop_distributions(net: Selector, data: EncodedSamples, index: int, hops: int) -> tuple[np.ndarray, list[int]]:
    """(H, N) selection probabilities of ``net`` at each greedy hop for question ``index``, and the choices."""
    net.eval()
    obs = {k: torch.from_numpy(np.asarray(v[index:index + 1])) for k, v in data.tensors().items()}
    selected = torch.zeros(obs["mask"].shape, dtype=torch.float32)  # (1, N)
    probs, chosen = [], []
    for _ in range(hops):
        p = torch.softmax(net({**obs, "selected": selected}).float(), dim=-1)[0]  # (N,)
        probs.append(p.numpy())
        choice = int(p.argmax())
        chosen.append(choice)
        selected[0, choice] = 1.0
    return np.stack(probs), chosen


def pick_questions(data: EncodedSamples, wrong: np.ndarray, count: int) -> list[tuple[int, str]]:
    """Up to ``count`` test questions: the first the final selector got wrong (if any), then questions spread
    over the split, preferring those with 3 to MAX_MEMORIES memories. (index, why) pairs."""
    n_mem = data.mask.sum(1)
    usable = np.flatnonzero(n_mem > 0)
    short = usable[(n_mem[usable] >= 3) & (n_mem[usable] <= MAX_MEMORIES)]
    pool = short if len(short) else usable
    picked: list[tuple[int, str]] = []
    misses = [i for i in pool if wrong[i]]
    if misses and count > 0:
        picked.append((int(misses[0]), "the first test question the final selector got wrong"))
    rest = [i for i in pool if i not in {p for p, _ in picked}]
    for i in np.linspace(0, len(rest) - 1, num=min(count - len(picked), len(rest))).round().astype(int) if rest else []:
        picked.append((int(rest[i]), "spread over the test split"))
    return picked[:count]


def story_attention(nets: dict[str, Selector], data: EncodedSamples, index: int, hops: int,
                    tokens: list[str] | None, why: str) -> StoryAttention:
    """Every selector's per-hop distributions for question ``index``, trimmed to its real memories."""
    n = int(data.mask[index].sum())
    story = StoryAttention(index, words(data.query[index], tokens),
                           tokens[int(data.answer[index])] if tokens and int(data.answer[index]) < len(tokens) else "?",
                           [words(data.memories[index, j], tokens) for j in range(n)],
                           [int(j) for j in np.flatnonzero(data.support[index, :n])], why)
    for title, net in nets.items():
        p, c = hop_distributions(net, data, index, hops)
        story.probs[title], story.chosen[title] = p[:, :n], c
    return story


def plot_story(story: StoryAttention, path: Path) -> Path:
    """Memories as rows (oldest at the top, their text as labels; supporting facts in green with a marker),
    one column per selector and hop, cells the selection probability, the chosen memory outlined in red."""
    from matplotlib.patches import Rectangle

    from memsel.reporting.figures import _plt, save

    plt = _plt()
    columns = [(title, h) for title, p in story.probs.items() for h in range(p.shape[0])]
    grid = np.stack([story.probs[t][h] for t, h in columns], axis=1)  # (n, columns)
    n = grid.shape[0]
    label_chars = max((len(m) for m in story.memories), default=10)
    fig, ax = plt.subplots(figsize=(2.0 + 0.075 * label_chars + 1.15 * len(columns), 1.9 + 0.36 * n))
    im = ax.imshow(grid, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for (i, j), v in np.ndenumerate(grid):
        if v >= 0.005:
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color="white" if v > 0.6 else "black")
    for j, (title, h) in enumerate(columns):
        c = story.chosen[title][h]
        if c < n:
            ax.add_patch(Rectangle((j - 0.5, c - 0.5), 1, 1, fill=False, edgecolor="#d62728", lw=2.5))
    ax.set_xticks(range(len(columns)), [f"{t}\nhop {h + 1}" if story.probs[t].shape[0] > 1 else t for t, h in columns],
                  fontsize=9)
    ax.xaxis.tick_top()
    ax.set_yticks(range(n), [f"{'► ' if i in story.support else ''}{i + 1}. {m}" for i, m in enumerate(story.memories)],
                  fontsize=9)
    for i, tick in enumerate(ax.get_yticklabels()):
        if i in story.support:
            tick.set_color("#2ca02c")
            tick.set_fontweight("bold")
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, label="selection probability")
    ax.set_title(f"Q{story.index}: {story.query}?  (answer: {story.answer})", fontsize=10, pad=10)
    ax.set_xlabel("green ►: supporting fact   red box: chosen memory (greedy)", fontsize=8)
    fig.tight_layout()
    return save(fig, path)


def _run_config(run_dir: Path):
    """The run folder's config.yaml (memory budget, hops), or None when it cannot be read."""
    import logging

    from memsel.config import load_config
    from memsel.layout import RunLayout

    path = RunLayout(run_dir).config
    try:
        return load_config(path, run_dir=str(run_dir)) if path.is_file() else None
    except Exception as e:  # noqa: BLE001 - a config of another memsel version: show the data as it is
        logging.getLogger(__name__).warning("report: %s: %s; showing the test split without its memory budget", path, e)
        return None


def run_dir_stories(run_dir: Path, folder: Path, prefix: str, count: int) -> list[tuple[Path, StoryAttention]]:
    """Heatmaps (``folder/<prefix>_q<index>.png``) of up to ``count`` test questions of a run folder, for every
    selector it holds (SHOWN); none when it has no test split or no selector."""
    from memsel.data.encode import Vocab
    from memsel.evaluate import exact_match, hop_counts, selector_choices
    from memsel.layout import RunLayout

    layout = RunLayout(Path(run_dir))
    test = layout.data / "test.npz"
    nets = {title: Selector.load(layout.selector(sub)) for _, sub, title in SHOWN if layout.selector(sub).is_file()}
    if not test.is_file() or not nets or count <= 0:
        return []
    cfg = _run_config(Path(run_dir))
    data = EncodedSamples.load(test)
    if cfg is not None:
        from memsel.pipeline import budgeted

        data = budgeted(cfg, data, "test")  # what the selectors saw in the evaluation
    counts = hop_counts(data, cfg.env.hops if cfg is not None else 1)
    final = list(nets.values())[-1]
    chosen = selector_choices(final, data, counts)
    t = {k: torch.from_numpy(np.asarray(v)) for k, v in
         (("chosen", chosen), ("support", data.support), ("n_support", data.n_support), ("hops", counts))}
    wrong = ~exact_match(t["chosen"], t["support"], t["n_support"], t["hops"]).numpy()
    tokens = Vocab.load(layout.vocab).tokens if layout.vocab.is_file() else final.vocab
    out = []
    for index, why in pick_questions(data, wrong, count):
        story = story_attention(nets, data, index, int(counts[index]), tokens, why)
        out.append((plot_story(story, Path(folder) / f"{prefix}_q{index}.png"), story))
    return out
