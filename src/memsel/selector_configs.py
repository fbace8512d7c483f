"""The selector's settings: what every family shares, and one config dataclass per family.

``selector.kind`` chooses the family and with it the config class (lerobot's polymorphic config):
``SelectorConfig(kind="mha", num_heads=8)`` builds an :class:`MHAConfig`, YAML keys stay flat
(``selector: {kind: mha, num_heads: 8}``), and a field the kind does not have is refused. Each
family registers its config here with a reference to its network (memsel.families), so this module
and memsel.config stay importable without torch. A family in a module of its own registers both
at once: ``@FAMILIES.register("toy", ToyConfig)`` on its network class.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from memsel.registry import ConfigError, Registry, check

FAMILIES = Registry("selector family")
"""selector.kind -> the family's network class (a memsel.families.SelectorFamily) and config class."""

SENTENCE_ENCODERS = ("bow", "pe", "learned")
ATTENTION_KINDS = ("softmax", "stick_breaking")
AGE_ENCODINGS = ("table", "log")
SELF_ATTENTION_MODES = ("full", "chunked", "linear")


@dataclass
class SelectorConfig:
    """The selector network (see memsel.network and memsel.families): the settings every family shares.

    Constructing ``SelectorConfig(kind=...)`` gives the config class that family registered."""

    kind: str = "ff"
    """Family: ``ff`` additive attention, ``conv1d`` convolution over the list, ``se`` squeeze-and-excitation, ``mha`` multi-head cross-attention."""
    embed_dim: int = 32
    """Word, sentence and memory embedding size d."""
    hidden_dim: int = 64
    """Hidden units of the additive scoring layer and of every feed-forward sublayer."""
    encoder: str = "pe"
    """Sentence encoder: ``bow`` bag of words, ``pe`` MemN2N position encoding, ``learned`` learned position weights."""
    recency: bool = True
    """Give every memory a learned embedding of its age (0 = most recent) that the family scores with."""
    age_encoding: str = "table"
    """How ``recency`` turns an age into features: ``table``, one learned row per memory slot (a network
    scores lists of at most data.max_memories); ``log``, learned rows for log-spaced age buckets (exact up
    to 15, then 4 per doubling), defined for any age: a network trained on short lists scores every
    memory of a longer one, ages older than any seen in training sharing the oldest trained bucket."""
    relative_age: bool = True
    """Multi-hop: give every memory learned features of its age relative to the oldest memory chosen at
    an earlier hop (before or after it, how far), e.g. "the last move before the fact I found"."""
    residual: bool = False
    """Refine memory and query embeddings with pre-norm residual feed-forward blocks before scoring."""
    num_residual_blocks: int = 1
    """How many residual blocks when ``residual`` is on."""
    attention: str = "softmax"
    """How a hop's scores become the selection distribution: ``softmax``, or ``stick_breaking``: memories
    in recency order, each takes a share sigmoid(score) of what the more recent ones left, so the most
    recent good match wins at any distance ("the last move before the fact I found")."""
    hops: int = 1
    """Attention hops (End-To-End Memory Networks): each hop adds what it read to the query for the next."""
    dropout: float = 0.0
    """Dropout in residual blocks and self-attention layers (training only)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> "SelectorConfig":
        if cls is SelectorConfig:
            kind = kwargs.get("kind", args[0] if args else "ff")
            try:
                cls = FAMILIES.config_cls(kind) or cls
            except ValueError as e:
                raise ConfigError(f"field 'selector.kind': {e}") from None
        return object.__new__(cls)

    def validate(self, p: str = "selector") -> None:
        """Refuse values out of range, naming the field; families add their own checks in :meth:`validate_family`."""
        FAMILIES.check(self.kind, f"{p}.kind")
        check(type(self) is FAMILIES.config_cls(self.kind), f"{p}.kind",
              f"the kind of {type(self).__name__}", self.kind)
        check(self.embed_dim >= 1, f"{p}.embed_dim", "an integer >= 1", self.embed_dim)
        check(self.hidden_dim >= 1, f"{p}.hidden_dim", "an integer >= 1", self.hidden_dim)
        check(self.encoder in SENTENCE_ENCODERS, f"{p}.encoder", f"one of {list(SENTENCE_ENCODERS)}", self.encoder)
        check(self.num_residual_blocks >= 1, f"{p}.num_residual_blocks", "an integer >= 1", self.num_residual_blocks)
        check(self.age_encoding in AGE_ENCODINGS, f"{p}.age_encoding", f"one of {list(AGE_ENCODINGS)}",
              self.age_encoding)
        check(self.attention in ATTENTION_KINDS, f"{p}.attention", f"one of {list(ATTENTION_KINDS)}", self.attention)
        check(self.hops >= 1, f"{p}.hops", "an integer >= 1", self.hops)
        check(0.0 <= self.dropout < 1.0, f"{p}.dropout", "a number in [0, 1)", self.dropout)
        self.validate_family(p)

    def validate_family(self, p: str) -> None:
        """The family's own checks (none by default)."""

    def retyped(self, overrides: dict) -> "SelectorConfig":
        """This config as the class of ``overrides['kind']`` (when it changes the kind), keeping the fields
        both classes have; what memsel.config does before it applies a YAML or ``--set`` selector section."""
        kind = overrides.get("kind", self.kind)
        if kind == self.kind:
            return self
        FAMILIES.check(kind, "selector.kind")
        target = FAMILIES.config_cls(kind)
        keep = {f.name for f in dataclasses.fields(target)}
        return target(**{k: v for k, v in dataclasses.asdict(self).items() if k in keep and k != "kind"}, kind=kind)

    @classmethod
    def from_saved(cls, fields: dict) -> "SelectorConfig":
        """Rebuild from a selector file's ``selector_config``, upgrading fields that older files spell otherwise
        and dropping the settings of other families (files before the per-family configs held them all)."""
        fields = dict(fields)
        if "position_encoding" in fields:  # memsel.selector/1 files before the encoder choice
            legacy = fields.pop("position_encoding")
            fields.setdefault("encoder", "pe" if legacy else "bow")
        fields.setdefault("relative_age", False)  # files from before the relative-age feature lack its weights
        target = FAMILIES.config_cls(fields.setdefault("kind", "ff"))
        known = {f.name for f in dataclasses.fields(target)}
        return target(**{k: v for k, v in fields.items() if k in known})


@FAMILIES.register_config("ff", "memsel.families:FeedForwardSelector")
@dataclass
class FFConfig(SelectorConfig):
    """``ff``: additive attention has no settings of its own."""


@FAMILIES.register_config("conv1d", "memsel.families:ConvSelector")
@dataclass
class Conv1dConfig(SelectorConfig):
    """``conv1d``: a convolution over neighbouring memory slots before the additive score."""

    kind: str = "conv1d"
    conv_kernel: int = 3
    """Kernel width over neighbouring memory slots (odd)."""

    def validate_family(self, p: str) -> None:
        check(self.conv_kernel >= 1 and self.conv_kernel % 2 == 1, f"{p}.conv_kernel", "an odd integer >= 1",
              self.conv_kernel)


@FAMILIES.register_config("se", "memsel.families:SqueezeExciteSelector")
@dataclass
class SEConfig(SelectorConfig):
    """``se``: squeeze-and-excitation channel gates before the additive score."""

    kind: str = "se"
    se_reduction: int = 4
    """The excitation bottleneck has embed_dim / se_reduction units (at least 1)."""

    def validate_family(self, p: str) -> None:
        check(self.se_reduction >= 1, f"{p}.se_reduction", "an integer >= 1", self.se_reduction)


@FAMILIES.register_config("mha", "memsel.families:MultiHeadSelector")
@dataclass
class MHAConfig(SelectorConfig):
    """``mha``: optional self-attention among memories, then multi-head cross-attention from the query."""

    kind: str = "mha"
    num_heads: int = 4
    """Attention heads (embed_dim must be a multiple of it)."""
    self_attention_layers: int = 0
    """Pre-norm self-attention layers among the memories before the cross-attention."""
    self_attention: str = "full"
    """Self-attention cost: ``full`` O(N^2), ``chunked`` O(N * attention_chunk), ``linear`` O(N * d^2)."""
    attention_chunk: int = 256
    """``chunked`` self-attention: memories attend only within consecutive blocks of this many slots."""

    def validate_family(self, p: str) -> None:
        check(self.num_heads >= 1, f"{p}.num_heads", "an integer >= 1", self.num_heads)
        check(self.embed_dim % self.num_heads == 0, f"{p}.num_heads",
              f"a divisor of selector.embed_dim ({self.embed_dim})", self.num_heads)
        check(self.self_attention_layers >= 0, f"{p}.self_attention_layers", "an integer >= 0",
              self.self_attention_layers)
        check(self.self_attention in SELF_ATTENTION_MODES, f"{p}.self_attention",
              f"one of {list(SELF_ATTENTION_MODES)}", self.self_attention)
        check(self.attention_chunk >= 1, f"{p}.attention_chunk", "an integer >= 1", self.attention_chunk)
