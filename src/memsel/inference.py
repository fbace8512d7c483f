"""Selecting memories from raw text with a trained selector file (``memsel select``).

    >>> import memsel
    >>> predictor = memsel.SelectorPredictor.load("runs/quickstart/ppo/selector.pt")
    >>> predictor.rank(["Mary went to the kitchen.", "John moved to the garden."], "Where is Mary?")
    [Ranked(index=0, text='Mary went to the kitchen.', probability=0.97), Ranked(index=1, ...)]

Text is tokenised and encoded exactly as the training data was (memsel.data.encode.Vocab, words
unseen in training become <unk>, sentences are cut to the length the network was trained on).
Pure PyTorch: no Lightning, Ray or MLflow.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple, Sequence

import torch

from memsel.data.encode import UNK, Vocab
from memsel.devices import torch_device
from memsel.layout import RunLayout
from memsel.network import Selector

log = logging.getLogger(__name__)


class Ranked(NamedTuple):
    """One memory of a ranking: its position in the input list, its text, its selection probability."""

    index: int
    text: str
    probability: float


def vocabulary_of_run(run_dir: str | Path) -> list[str] | None:
    """The token list of a run (``<run_dir>/data/vocab.json``), or None when the run has none yet."""
    path = RunLayout(Path(run_dir)).vocab
    return Vocab.load(path).tokens if path.is_file() else None


class SelectorPredictor:
    """Ranks raw-text memories for a raw-text query with a trained :class:`memsel.network.Selector`,
    run on ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N`` or a torch.device; the network is moved there)."""

    def __init__(self, selector: Selector, vocab: Vocab, device: str | torch.device = "cpu"):
        if len(vocab) != selector.spec.vocab_size:
            raise ValueError(f"vocabulary of {len(vocab)} tokens for a network built for {selector.spec.vocab_size}")
        self.device = torch_device(device)
        self.selector = selector.eval().to(self.device)
        self.vocab = vocab

    @classmethod
    def load(cls, path: str | Path, vocab: str | Path | Vocab | None = None,
             device: str | torch.device = "cpu") -> "SelectorPredictor":
        """From a selector file (read on the CPU, then moved to ``device``); ``vocab`` (a vocab.json or
        Vocab) is needed only if the file holds none."""
        net = Selector.load(path)
        if vocab is None:
            if net.vocab is None:
                raise ValueError(f"{path}: the file holds no vocabulary (written by an older memsel); pass the "
                                 "run's vocabulary, e.g. --vocab <run-dir>/data/vocab.json")
            vocab = Vocab(net.vocab)
        elif not isinstance(vocab, Vocab):
            vocab = Vocab.load(Path(vocab))
        return cls(net, vocab, device)

    def text_warnings(self, memories: Sequence[str], query: str) -> list[str]:
        """What makes a ranking of ``memories`` for ``query`` meaningless, one message per problem: an empty
        query or memory, or one with no word the selector's vocabulary knows (all of it reads as <unk>)."""
        unk = self.vocab.index[UNK]

        def state(text: str) -> str:
            ids = self.vocab.encode(text)
            return "empty" if not ids else "unknown" if all(i == unk for i in ids) else "ok"

        out = []
        q = state(query)
        if q == "empty":
            out.append("the query is empty: the ranking cannot depend on it")
        elif q == "unknown":
            out.append(f"no word of the query {query!r} is in the selector's vocabulary: it reads as <unk> only")
        states = [state(m) for m in memories]
        for kind, what in (("empty", "empty"), ("unknown", "without a word the selector's vocabulary knows")):
            idx = [i for i, st in enumerate(states) if st == kind]
            if idx:
                out.append(f"{len(idx)} of {len(memories)} memories {what} (#{', #'.join(map(str, idx))}): "
                           "their scores cannot depend on their words")
        return out

    def _ids(self, text: str) -> list[int]:
        return self.vocab.encode(text)[:self.selector.spec.max_sentence_len]

    def observation(self, memories: Sequence[str], query: str, ages: Sequence[int],
                    selected: Sequence[int] = ()) -> dict[str, torch.Tensor]:
        """One-row selector input for ``memories`` (oldest first) with their ``ages``, on the predictor's device."""
        n, length = len(memories), self.selector.spec.max_sentence_len
        obs = {"memories": torch.zeros(1, n, length, dtype=torch.long), "mask": torch.ones(1, n, dtype=torch.bool),
               "query": torch.zeros(1, length, dtype=torch.long),
               "ages": torch.tensor([list(ages)], dtype=torch.long).reshape(1, n)}
        for j, text in enumerate(memories):
            ids = self._ids(text)
            obs["memories"][0, j, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        q = self._ids(query)
        obs["query"][0, :len(q)] = torch.tensor(q, dtype=torch.long)
        if selected:
            obs["selected"] = torch.zeros(1, n, dtype=torch.bool)
            obs["selected"][0, list(selected)] = True
        # Built on the CPU (many small writes), moved in one go.
        return {k: v.to(self.device) for k, v in obs.items()}

    @torch.inference_mode()
    def rank(self, memories: Sequence[str], query: str, ages: Sequence[int] | None = None,
             selected: Sequence[int] = ()) -> list[Ranked]:
        """All ``memories`` (oldest first), most probable first, for ``query``.

        ``ages`` defaults to len-1 ... 0 (the last memory is the most recent); ``selected`` lists
        indices of memories chosen at earlier steps of a multi-hop question. When the network
        has fewer memory slots than memories, the most recent ones are scored and the others
        get probability 0, as training kept the most recent ones.
        """
        n = len(memories)
        ages = list(range(n - 1, -1, -1)) if ages is None else [int(a) for a in ages]
        if len(ages) != n or any(a < 0 for a in ages):
            raise ValueError(f"ages: expected {n} integers >= 0 (one per memory), got {ages}")
        if any(not 0 <= i < n for i in selected):
            raise ValueError(f"selected: indices must be in 0..{n - 1}, got {list(selected)}")
        if n == 0:
            return []
        for message in self.text_warnings(memories, query):
            log.warning("%s", message)
        slots = self.selector.spec.max_memories
        keep = list(range(n))
        if n > slots and self.selector.age_embed is not None:
            keep = sorted(sorted(range(n), key=lambda i: (ages[i], -i))[:slots])  # the most recent, in order
            log.warning("%d memories for a network with %d slots: the %d oldest get probability 0 "
                        "(a network with selector.age_encoding 'log' scores lists of any length)",
                        n, slots, n - slots)
        where = {i: j for j, i in enumerate(keep)}
        obs = self.observation([memories[i] for i in keep], query, [ages[i] for i in keep],
                               [where[i] for i in selected if i in where])
        probs = torch.softmax(self.selector(obs)[0], dim=-1).tolist()
        scored = [Ranked(i, memories[i], probs[where[i]] if i in where else 0.0) for i in range(n)]
        # Most probable first; ties (and the unscored) by recency.
        return sorted(scored, key=lambda r: (-r.probability, ages[r.index], -r.index))
