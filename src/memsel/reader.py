"""The answer reader: predicts the answer word from the query and the memories chosen at each hop.

It is End-To-End Memory Networks' output stage with the attention taken out: the selector (or
PPO's policy) chooses, the reader reads. With the weights ``reads`` (B, H, N) that each hop puts
on the memories (one-hot for hard choices, the selector's softmax in end-to-end training),

    u = B(query) + sum_h sum_i reads[h, i] * C_h(memory_i)        logits = W u

``C_h`` is a separate sentence embedding per hop (position-encoded bag of words), so the reader
knows which hop read a memory (qa3's answer is in the third fact it reads, not the first). The
output is restricted to the words that answer a training question (``candidates``).

Three users: pretraining trains it on answers (memsel.pretrain), the environment's ``answer``
reward asks it (env_config ``reader: learned`` with ``reader_config: {path: .../reader.pt}``) and
evaluation reports answer accuracy with it.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from memsel.data.encode import DataSpec
from memsel.files import load_torch_file, save_torch_atomic
from memsel.network import BagOfWordsEncoder

FILE_FORMAT = "memsel.reader/1"


class AnswerReader(nn.Module):
    """Answer logits (B, V) from ``memories`` (B, N, L), ``query`` (B, L) and ``reads`` (B, H', N), H' <= hops."""

    def __init__(self, spec: DataSpec, dim: int, hops: int, candidates: Sequence[int]):
        super().__init__()
        if hops < 1:
            raise ValueError(f"AnswerReader: hops must be >= 1, got {hops}")
        self.spec, self.dim, self.hops = spec, dim, hops
        self.query_encoder = BagOfWordsEncoder(spec.vocab_size, dim, position_encoding=True)
        self.memory_encoders = nn.ModuleList(
            BagOfWordsEncoder(spec.vocab_size, dim, position_encoding=True) for _ in range(hops))
        self.out = nn.Linear(dim, spec.vocab_size, bias=False)
        allowed = torch.zeros(spec.vocab_size, dtype=torch.bool)
        allowed[torch.as_tensor(sorted(set(int(c) for c in candidates)), dtype=torch.long)] = True
        self.register_buffer("candidates", allowed)

    def forward(self, memories: torch.Tensor, query: torch.Tensor, reads: torch.Tensor) -> torch.Tensor:
        if reads.dim() != 3 or reads.shape[0] != memories.shape[0] or reads.shape[2] != memories.shape[1]:
            raise ValueError(f"reader: reads must be (B, H, N) = ({memories.shape[0]}, H, {memories.shape[1]}), "
                             f"got {tuple(reads.shape)}")
        u = self.query_encoder(query.long())  # (B, d)
        for h in range(min(reads.shape[1], self.hops)):
            m = self.memory_encoders[h](memories.long())  # (B, N, d)
            u = u + torch.einsum("bn,bnd->bd", reads[:, h].to(m.dtype), m)
        logits = self.out(u)  # (B, V)
        return logits.masked_fill(~self.candidates, torch.finfo(logits.dtype).min)

    @staticmethod
    def one_hot_reads(chosen: torch.Tensor, n: int) -> torch.Tensor:
        """(B, H) slot indices (-1 = no choice at that hop) -> (B, H, N) one-hot reads."""
        reads = torch.zeros(*chosen.shape, n, device=chosen.device)
        valid = chosen >= 0
        reads[valid.nonzero(as_tuple=True) + (chosen[valid],)] = 1.0
        return reads

    @torch.no_grad()
    def answer(self, memories: torch.Tensor, query: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        """Answer token ids (B,) for hard choices ``chosen`` (B, H) (-1 = none)."""
        self.eval()
        return self(memories, query, self.one_hot_reads(chosen, memories.shape[1])).argmax(-1)

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> Path:
        blob = {"format": FILE_FORMAT, "spec": asdict(self.spec), "dim": self.dim, "hops": self.hops,
                "candidates": self.candidates.nonzero().squeeze(-1).tolist(),
                "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()}}
        return save_torch_atomic(blob, path)

    @classmethod
    def load(cls, path: str | Path) -> "AnswerReader":
        blob = load_torch_file(path, FILE_FORMAT, "reader", "pretraining with pretrain.answer_weight > 0 writes one")
        reader = cls(DataSpec(**blob["spec"]), blob["dim"], blob["hops"], blob["candidates"])
        reader.load_state_dict(blob["state_dict"])
        reader.eval()
        return reader


class LearnedReader:
    """The environment's ``learned`` reader: an :class:`AnswerReader` file answering from the chosen slots."""

    def __init__(self, path: str | Path):
        self.reader = AnswerReader.load(path)
        self.path = str(path)

    def __call__(self, memories: np.ndarray, chosen: Sequence[int], query: np.ndarray) -> int:
        picks = torch.as_tensor(list(chosen)[:self.reader.hops] or [-1], dtype=torch.long).unsqueeze(0)
        return int(self.reader.answer(torch.as_tensor(memories).unsqueeze(0), torch.as_tensor(query).unsqueeze(0),
                                      picks)[0])
