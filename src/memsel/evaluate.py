"""Evaluation on a test split: selection (every hop), per-hop and answer accuracy, for baselines and
trained selectors, plus the results plot.

A question is answered in ``hops`` selections (``env.hops``; 0 = as many as its supporting facts),
greedily: the network's argmax at each hop, with the memories chosen so far in ``selected``, as
in the environment. Metrics, each over the questions that have at least one memory:

- ``selection_accuracy`` (exact match): the choices hold all the supporting facts they can, i.e.
  min(hops, supporting facts) distinct ones; the environment's "correct". Supporting facts outside
  the memory budget count as misses.
- ``hop_accuracy`` [h1, h2, ...]: at hop h, over questions with at least h supporting facts: the
  choice is a supporting fact not chosen at an earlier hop (in any order).
- ``answer_accuracy``: the answer reader (memsel.reader), reading what the method chose, gives the
  right word. Only when a reader was trained (``pretrain.answer_weight > 0``).

Baselines: ``random`` (uniform choice at every hop, exact expectations), ``most_recent`` (the
newest memory at every hop), ``recency_prior`` (greedy under the temporal prior alone: the h-th
newest memory at hop h), and with a reader, ``oracle`` (the true supporting facts, in the data's
order: what the reader can do with perfect choices).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from memsel import progress
from memsel.data.budget import support_outside
from memsel.data.encode import EncodedSamples, question_hops
from memsel.devices import torch_device
from memsel.files import atomic_path
from memsel.network import Selector

METHOD_ORDER = ("random", "most_recent", "recency_prior", "oracle", "pretrained", "ppo_scratch", "ppo_no_distill",
                "ppo", "ppo_tuned")
METHOD_LABELS = {
    "random": "random choice (expected)",
    "most_recent": "most recent memory",
    "recency_prior": "recency prior alone",
    "oracle": "supporting facts (oracle)",
    "pretrained": "pretrained alone (Lightning)",
    "ppo_scratch": "PPO from scratch",
    "ppo_no_distill": "PPO, pretrained, no distillation",
    "ppo": "PPO + distillation (RLlib)",
    "ppo_tuned": "PPO, best sweep trial",
}


def hop_counts(data: EncodedSamples, hops: int = 1) -> np.ndarray:
    """(S,) selections per question: ``hops``, or with 0 as many as its supporting facts (at least 1)."""
    return question_hops(hops, data.n_support.astype(np.int64))


def _usable(data: EncodedSamples) -> np.ndarray:
    """Questions that have at least one memory (a question before any statement has none to pick)."""
    return data.mask.any(axis=1)


def fresh_hits(chosen: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """(B, H) bool: hop h chose a supporting fact that no earlier hop chose (``chosen`` (B, H) slot
    ids, -1 = no choice; ``support`` (B, N) bool)."""
    hit = support.gather(-1, chosen.clamp(min=0)) & (chosen >= 0)
    for h in range(1, chosen.shape[1]):  # a fact chosen again adds nothing
        hit[:, h] &= ~(chosen[:, :h] == chosen[:, h:h + 1]).any(1)
    return hit


def exact_match(chosen: torch.Tensor, support: torch.Tensor, n_support: torch.Tensor,
                hops: torch.Tensor) -> torch.Tensor:
    """(B,) bool: the choices hold min(hops, supporting facts) distinct supporting facts (the env's "correct")."""
    return fresh_hits(chosen, support).sum(1) >= torch.minimum(hops, n_support).clamp(min=1)


def score_choices(data: EncodedSamples, chosen: np.ndarray, hops: np.ndarray) -> dict[str, object]:
    """Metrics of hard choices ``chosen`` (S, H) (slot ids, -1 past a question's hops)."""
    ok = _usable(data)
    t = {k: torch.from_numpy(np.asarray(v)) for k, v in
         (("chosen", chosen), ("support", data.support), ("n_support", data.n_support), ("hops", hops))}
    new = fresh_hits(t["chosen"], t["support"]).numpy()
    exact = exact_match(t["chosen"], t["support"], t["n_support"], t["hops"]).numpy()
    hop_acc = []
    for h in range(chosen.shape[1]):
        asked = ok & (data.n_support > h) & (hops > h)
        if asked.any():
            hop_acc.append(float(new[asked, h].mean()))
    return {"selection_accuracy": float(exact[ok].mean()) if ok.any() else float("nan"),
            "hop_accuracy": hop_acc, "questions": float(ok.sum())}


def random_scores(data: EncodedSamples, hops: np.ndarray) -> dict[str, object]:
    """Exact expectations for a uniform choice among a question's memories at every hop (repeats allowed)."""
    ok = _usable(data)
    count = np.maximum(data.mask.sum(1), 1).astype(float)
    inside = data.support.sum(1)
    need = np.maximum(np.minimum(hops, data.n_support), 1)
    h_max = int(hops.max()) if len(hops) else 0
    # p[j]: probability that j distinct supporting facts were drawn so far (per question)
    p = np.zeros((len(data), int(inside.max(initial=0)) + 2))
    p[:, 0] = 1.0
    hop_acc = []
    for h in range(h_max):
        j = np.arange(p.shape[1])
        fresh = np.clip(inside[:, None] - j[None, :], 0, None) / count[:, None]  # (S, J) P(new fact | j)
        asked = ok & (data.n_support > h) & (hops > h)
        if asked.any():
            hop_acc.append(float((p * fresh).sum(1)[asked].mean()))
        active = (hops > h)[:, None]
        moved = p * fresh
        step = p - moved
        step[:, 1:] += moved[:, :-1]
        p = np.where(active, step, p)
    exact = np.array([p[i, need[i]:].sum() for i in range(len(data))])
    return {"selection_accuracy": float(exact[ok].mean()) if ok.any() else float("nan"),
            "hop_accuracy": hop_acc, "questions": float(ok.sum())}


def baseline_choices(data: EncodedSamples, hops: np.ndarray) -> dict[str, np.ndarray]:
    """Hard choices (S, H) of ``most_recent``, ``recency_prior`` and ``oracle``."""
    h_max = int(hops.max()) if len(hops) else 1
    newest = np.maximum(data.mask.sum(1) - 1, 0)  # (S,)
    steps = np.arange(h_max)[None, :]
    past = steps >= hops[:, None]
    recent = np.where(past, -1, np.repeat(newest[:, None], h_max, 1))
    prior = np.where(past, -1, np.maximum(newest[:, None] - steps, 0))
    oracle = np.full((len(data), h_max), -1, dtype=np.int64)
    for h in range(h_max):
        has = (data.support_rank == h + 1).any(1) & (hops > h)
        oracle[has, h] = (data.support_rank[has] == h + 1).argmax(1)
    return {"most_recent": recent, "recency_prior": prior, "oracle": oracle}


@torch.no_grad()
def greedy_rollout(net: Selector, tensors: dict[str, torch.Tensor], hops: torch.Tensor) -> torch.Tensor:
    """(B, H) greedy choices: at hop h the argmax given the memories chosen before (-1 past a row's hops)."""
    mask = tensors["mask"]
    b, n = mask.shape
    h_max = int(hops.max()) if b else 0
    selected = torch.zeros(b, n, device=mask.device)
    chosen = torch.full((b, h_max), -1, dtype=torch.long, device=mask.device)
    for h in range(h_max):
        choice = net({**tensors, "selected": selected}).argmax(-1)  # (B,)
        active = hops > h
        chosen[active, h] = choice[active]
        selected[active.nonzero(as_tuple=True)[0], choice[active]] = 1.0
    return chosen


def selector_choices(net: Selector, data: EncodedSamples, hops: np.ndarray, batch_size: int = 1024,
                     device: str | torch.device = "cpu") -> np.ndarray:
    """(S, H) greedy choices of ``net`` on ``data``, run on ``device`` (``net`` is moved there)."""
    where = torch_device(device)
    net.eval().to(where)
    tensors = {k: torch.from_numpy(v) for k, v in data.tensors().items()}  # on the CPU: one batch at a time moves
    h_max = int(hops.max()) if len(hops) else 1
    out = np.full((len(data), h_max), -1, dtype=np.int64)
    for start in range(0, len(data), batch_size):
        batch = {k: v[start:start + batch_size].to(where) for k, v in tensors.items()}
        batch_hops = torch.from_numpy(hops[start:start + batch_size]).to(where)
        got = greedy_rollout(net, batch, batch_hops).cpu().numpy()
        out[start:start + len(got), :got.shape[1]] = got
    return out


def answer_accuracy(reader, data: EncodedSamples, chosen: np.ndarray, batch_size: int = 1024,
                    device: str | torch.device = "cpu") -> float:
    """Fraction of usable questions the reader answers right from ``chosen`` (S, H), read on ``device``
    (``reader`` is moved there)."""
    where = torch_device(device)
    reader.to(where)
    ok = _usable(data)
    right = []
    for start in range(0, len(data), batch_size):
        sl = slice(start, start + batch_size)
        said = reader.answer(torch.from_numpy(data.memories[sl]).to(where), torch.from_numpy(data.query[sl]).to(where),
                             torch.from_numpy(chosen[sl]).to(where))
        right.append(said.cpu().numpy() == data.answer[sl])
    hits = np.concatenate(right) if right else np.zeros(0, dtype=bool)
    return float(hits[ok].mean()) if ok.any() else float("nan")


def baseline_scores(data: EncodedSamples, hops: int = 1, reader=None,
                    device: str | torch.device = "cpu") -> dict[str, dict[str, object]]:
    """The baselines' metrics (and, with ``reader``, their answer accuracy and the oracle's, read on ``device``)."""
    counts = hop_counts(data, hops)
    results = {"random": random_scores(data, counts)}
    choices = baseline_choices(data, counts)
    for name in ("most_recent", "recency_prior", "oracle"):
        if name == "oracle" and reader is None:
            continue
        results[name] = score_choices(data, choices[name], counts)
        if reader is not None:
            results[name]["answer_accuracy"] = answer_accuracy(reader, data, choices[name], device=device)
    if reader is not None:
        rng = np.random.default_rng(0)
        h_max = int(counts.max())
        n_valid = np.maximum(data.mask.sum(1), 1)
        draw = (rng.random((len(data), h_max)) * n_valid[:, None]).astype(np.int64)
        draw[np.arange(h_max)[None, :] >= counts[:, None]] = -1
        results["random"]["answer_accuracy"] = answer_accuracy(reader, data, draw, device=device)  # one seeded draw
    return results


def selector_scores(net: Selector, data: EncodedSamples, hops: int = 1, reader=None,
                    batch_size: int = 1024, device: str | torch.device = "cpu") -> dict[str, object]:
    """Greedy metrics of ``net`` on ``data`` (see the module docstring); the networks run on ``device``
    (``auto``, ``cpu``, ``cuda``, ``cuda:N`` or a torch.device), the scores come back as CPU numbers."""
    counts = hop_counts(data, hops)
    chosen = selector_choices(net, data, counts, batch_size, device)
    out = score_choices(data, chosen, counts)
    if reader is not None:
        out["answer_accuracy"] = answer_accuracy(reader, data, chosen, device=device)
    return out


def steps_to_fraction(curve: list[dict[str, float]], target: float) -> float | None:
    """Env steps of the first iteration whose training return reaches ``target`` (None: never)."""
    for row in curve:
        if row.get("return", float("nan")) >= target:
            return float(row["env_steps"])
    return None


def sample_efficiency(curves: dict[str, list[dict[str, float]]], fraction: float = 0.95) -> dict[str, dict]:
    """Per PPO run: env steps until its training return first reaches ``fraction`` of its own final
    return (``env_steps_to_95_own``), and of the best final return among the runs
    (``env_steps_to_95_best``; None when never reached)."""
    finals = {m: c[-1].get("return", float("nan")) for m, c in curves.items() if c}
    best = max(finals.values(), default=float("nan"))
    out = {}
    for m, curve in curves.items():
        if not curve:
            continue
        out[m] = {"final_train_return": finals[m],
                  "env_steps_to_95_own": steps_to_fraction(curve, fraction * finals[m]),
                  "env_steps_to_95_best": steps_to_fraction(curve, fraction * best),
                  "env_steps_total": float(curve[-1]["env_steps"])}
    return out


def evaluate(data: EncodedSamples, selectors: dict[str, Path], hops: int = 1,
             reader_path: Path | None = None, device: str | torch.device = "cpu") -> dict[str, dict[str, object]]:
    """Baselines plus every selector file in ``selectors`` (method name -> path), in METHOD_ORDER.

    ``data`` is the test split as the selectors see it (through the memory budget, see
    memsel.data.budget); ``hops`` as ``env.hops``; ``reader_path`` an answer reader file, for
    answer accuracy; ``device`` where the networks run (files load on the CPU, then move). Every
    method's entry also carries ``support_outside_budget`` (supporting facts not among the slots) and
    ``questions_without_support`` (questions left with none, which count as misses), the same for
    every method: what the budget hides is reported, not dropped.
    """
    reader = None
    if reader_path is not None:
        from memsel.reader import AnswerReader

        reader = AnswerReader.load(reader_path)
    with progress.bar(1 + len(selectors), "evaluate", unit="method") as bar:
        results = baseline_scores(data, hops, reader, device)
        bar.update()
        for name, path in selectors.items():
            bar.set_postfix_str(name, refresh=False)
            results[name] = selector_scores(Selector.load(path), data, hops, reader, device=device)
            bar.update()
    outside = {k: float(v) for k, v in support_outside(data).items()}
    for metrics in results.values():
        metrics.update(outside)
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    return dict(sorted(results.items(), key=lambda kv: order.get(kv[0], len(order))))


def _pct(v: object) -> str:
    return f"{float(v) * 100:.1f}%" if isinstance(v, (int, float)) and v == v else "-"


def format_table(results: dict[str, dict[str, object]]) -> str:
    """A plain-text table: exact-match selection, per-hop and answer accuracy per method."""
    width = max(len(METHOD_LABELS.get(m, m)) for m in results)
    hops = max((len(v.get("hop_accuracy", [])) for v in results.values()), default=0)
    with_answers = any("answer_accuracy" in v for v in results.values())
    head = f"{'method':<{width}}  selection (all hops)"
    rule = f"{'-' * width}  --------------------"
    if hops > 1:
        head += "  " + " ".join(f"{'hop ' + str(h + 1):>6}" for h in range(hops))
        rule += "  " + " ".join("------" for _ in range(hops))
    if with_answers:
        head += "  answer"
        rule += "  ------"
    lines = [head + "  questions", rule + "  ---------"]
    for m, v in results.items():
        line = f"{METHOD_LABELS.get(m, m):<{width}}  {_pct(v['selection_accuracy']):>20}"
        if hops > 1:
            per = list(v.get("hop_accuracy", [])) + [float("nan")] * hops
            line += "  " + " ".join(f"{_pct(a):>6}" for a in per[:hops])
        if with_answers:
            line += f"  {_pct(v.get('answer_accuracy')):>6}"
        lines.append(line + f"  {int(v['questions']):9d}")
    first = next(iter(results.values()), {})
    if first.get("support_outside_budget", 0) > 0:
        lines.append(f"{int(first['support_outside_budget'])} supporting facts lie outside the memory budget; "
                     f"{int(first.get('questions_without_support', 0))} questions have none inside (counted as misses)")
    return "\n".join(lines)


def plot_results(results: dict[str, dict[str, float]], curve: list[dict[str, float]] | dict[str, list], path: Path,
                 title: str) -> Path:
    """Bar chart of test accuracy per method, next to the PPO learning curves: the return of every
    PPO run in ``curve`` (method -> curve; a bare list is the main run's), and the main run's KLs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = curve if isinstance(curve, dict) else {"ppo": curve}
    curve = curves.get("ppo") or []
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = list(results)
    labels = [METHOD_LABELS.get(m, m) for m in names]
    accs = [results[m]["selection_accuracy"] * 100 for m in names]
    answers = [float(results[m].get("answer_accuracy", float("nan"))) * 100 for m in names]
    y = np.arange(len(names))
    if any(a == a for a in answers):  # two bars per method: selection and answer
        bars = ax1.barh(y - 0.2, accs, height=0.4, color="#4C72B0", label="selection (all hops)")
        bars2 = ax1.barh(y + 0.2, answers, height=0.4, color="#DD8452", label="answer")
        ax1.bar_label(bars2, fmt="%.1f%%", padding=3, fontsize="small")
        ax1.legend(loc="lower right", fontsize="small")
    else:
        bars = ax1.barh(y, accs, color="#4C72B0")
    ax1.bar_label(bars, fmt="%.1f%%", padding=3, fontsize="small")
    ax1.set_yticks(y, labels)
    ax1.set_xlim(0, 115)
    ax1.invert_yaxis()
    ax1.set_xlabel("test accuracy (%)")
    ax1.set_title("Which memories did it pick? (exact match)")
    if curve:
        steps = [r["env_steps"] for r in curve]
        ax2.plot(steps, [r.get("return", np.nan) for r in curve], "o-", label="return (train), PPO + distill.")
        for m, other in curves.items():
            if m != "ppo" and other:
                ax2.plot([r["env_steps"] for r in other], [r.get("return", np.nan) for r in other], ".-",
                         label=f"return, {METHOD_LABELS.get(m, m)}")
        ax2.set_xlabel("env steps")
        ax2.set_ylabel("return")
        ax2.set_ylim(0, 1.05)
        ax3 = ax2.twinx()
        ax3.plot(steps, [r.get("mean_kl_loss", np.nan) for r in curve], "s--", color="#C44E52", label="PPO KL")
        ax3.plot(steps, [r.get("distill_kl", np.nan) for r in curve], "^--", color="#55A868",
                 label="KL to teacher")
        ax3.set_ylabel("KL")
        lines = ax2.get_lines() + ax3.get_lines()
        ax2.legend(lines, [ln.get_label() for ln in lines], loc="upper center", bbox_to_anchor=(0.5, -0.14),
                   ncol=2, fontsize="small")
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
