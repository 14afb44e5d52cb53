"""Hyper-parameters of the Text2Semantic decoder, read from an official checkpoint's ``config``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..checkpoint_io import MAX_LAYERS

# Upstream's semantic stream runs at 25 tokens/s but its early-stop budget is computed with 50 Hz.
EARLY_STOP_PER_SECOND = 50
# Inclusive ranges (official: vocab 1025, phonemes 512/732, dims 512, 16 heads, 24 layers, max_sec
# 54). Generous; they keep a config from building a model for minutes before its weights are
# compared, or from producing a zero, negative or non-finite early-stop budget.
INT_RANGES: dict[str, tuple[int, int]] = {
    "vocab_size": (2, 1 << 20),
    "phoneme_vocab_size": (1, 1 << 20),
    "embedding_dim": (1, 1 << 14),
    "hidden_dim": (1, 1 << 14),
    "n_head": (1, 1 << 10),
    "n_layer": (1, MAX_LAYERS),
    "eos": (1, 1 << 20),
}
MAX_SEC_LIMIT = 3600.0


class ConfigError(ValueError):
    """The ``config`` dict of a GPT checkpoint lacks a field or holds an impossible value."""


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 1025  # semantic codes 0..1023 plus EOS
    phoneme_vocab_size: int = 732  # 512 in v1 GPT files, 732 from v2 on
    embedding_dim: int = 512
    hidden_dim: int = 512
    n_head: int = 16
    n_layer: int = 24
    eos: int = 1024
    max_sec: float = 54
    bert_dim: int = 1024
    norm_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.hidden_dim // self.n_head

    @property
    def ffn_dim(self) -> int:
        # Upstream ignores ``linear_units`` in the config and always builds 4 * hidden.
        return 4 * self.hidden_dim

    @property
    def early_stop_num(self) -> int:
        # Flooring keeps upstream's test ``generated > 50 * max_sec`` for fractional max_sec too.
        return int(EARLY_STOP_PER_SECOND * self.max_sec)

    def __post_init__(self) -> None:
        for name, (low, high) in INT_RANGES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigError(f"{name} is {value!r}, expected an integer in {low}..{high}")
        if (
            isinstance(self.max_sec, bool)
            or not isinstance(self.max_sec, (int, float))
            or not (math.isfinite(self.max_sec) and 0 < self.max_sec <= MAX_SEC_LIMIT)
        ):
            raise ConfigError(
                f"max_sec is {self.max_sec!r}, expected a finite number of seconds in (0, {MAX_SEC_LIMIT:g}]"
            )
        if self.embedding_dim != self.hidden_dim:
            # The embeddings feed the transformer directly; upstream has no projection between them.
            raise ConfigError(f"embedding_dim {self.embedding_dim} != hidden_dim {self.hidden_dim}")
        if self.hidden_dim % self.n_head:
            raise ConfigError(f"hidden_dim {self.hidden_dim} is not divisible into {self.n_head} heads")
        if self.eos != self.vocab_size - 1:
            # The first decode steps ban EOS by dropping the last logit column, so EOS must be last.
            raise ConfigError(f"EOS {self.eos} is not the last semantic id (vocab_size {self.vocab_size})")

    @classmethod
    def from_checkpoint_config(cls, config: Any) -> GPTConfig:
        """Build from the nested training config stored next to the weights (``s1longer*.yaml``)."""
        if not isinstance(config, Mapping):
            raise ConfigError(f"config is a {type(config).__name__}, expected a nested dict")
        model, data = config.get("model"), config.get("data")
        if not isinstance(model, Mapping):
            raise ConfigError("config has no 'model' section")
        if not isinstance(data, Mapping):
            raise ConfigError("config has no 'data' section")

        def field(section: Mapping[str, Any], where: str, key: str, kind: type | tuple = int) -> Any:
            if key not in section:
                raise ConfigError(f"config[{where!r}] has no {key!r}")
            value = section[key]
            if isinstance(value, bool) or not isinstance(value, kind):
                raise ConfigError(
                    f"config[{where!r}][{key!r}] is {value!r}, expected {'an integer' if kind is int else 'a number'}"
                )
            return value

        return cls(
            vocab_size=field(model, "model", "vocab_size"),
            phoneme_vocab_size=field(model, "model", "phoneme_vocab_size"),
            embedding_dim=field(model, "model", "embedding_dim"),
            hidden_dim=field(model, "model", "hidden_dim"),
            n_head=field(model, "model", "head"),
            n_layer=field(model, "model", "n_layer"),
            eos=field(model, "model", "EOS"),
            max_sec=field(data, "data", "max_sec", (int, float)),
        )
