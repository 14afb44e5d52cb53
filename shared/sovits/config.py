"""SoVITS hyper-parameters, read from the ``config`` stored in a checkpoint (dict or HParams)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from ..checkpoint_io import MAX_LAYERS, CheckpointError, to_plain
from .version import V1_SYMBOL_COUNT, V2_SYMBOL_COUNT, SoVITSVersion

# Inclusive ranges of the integer fields. Official values: 32 kHz, filter 2048, hop 640, channels
# 192-768 (upsample 512, gin 512/1024), 2 heads, 6 layers, kernels 2-20, dilations 1-5. The ranges
# are generous; they exist so that a config cannot divide by zero, build negative shapes, or make
# building the model (before any weight is compared) take minutes.
INT_RANGES: dict[str, tuple[int, int]] = {
    "sampling_rate": (8000, 384000),
    "filter_length": (16, 16384),
    "hop_length": (1, 16384),
    "win_length": (1, 16384),
    "inter_channels": (1, 8192),
    "hidden_channels": (1, 8192),
    "filter_channels": (1, 32768),
    "n_heads": (1, 64),
    "n_layers": (1, MAX_LAYERS),
    "kernel_size": (1, 63),
    "upsample_initial_channel": (1, 8192),
    "gin_channels": (1, 8192),
}
# Integer tuples: (most entries, range of each entry).
TUPLE_RANGES: dict[str, tuple[int, tuple[int, int]]] = {
    "resblock_kernel_sizes": (8, (1, 63)),
    "upsample_rates": (8, (1, 64)),
    "upsample_kernel_sizes": (8, (1, 128)),
}
MAX_DILATION = 64


@dataclass(frozen=True)
class SoVITSConfig:
    model_version: str = "v2"  # v1 | v2 | v2Pro | v2ProPlus | v3 | v4
    symbol_version: str = "v2"  # v1 | v2
    # data
    sampling_rate: int = 32000
    filter_length: int = 2048
    hop_length: int = 640
    win_length: int = 2048
    # model
    inter_channels: int = 192
    hidden_channels: int = 192
    filter_channels: int = 768
    n_heads: int = 2
    n_layers: int = 6
    kernel_size: int = 3
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    upsample_rates: tuple[int, ...] = (10, 8, 2, 2, 2)
    upsample_initial_channel: int = 512
    upsample_kernel_sizes: tuple[int, ...] = (16, 16, 8, 2, 2)
    gin_channels: int = 512

    @property
    def is_pro(self) -> bool:
        return self.model_version in ("v2Pro", "v2ProPlus")

    @property
    def spec_channels(self) -> int:
        return self.filter_length // 2 + 1

    @property
    def ref_enc_bins(self) -> int:
        # v2+ style encoders were trained on the lowest 704 of the 1025 STFT bins.
        return self.spec_channels if self.model_version == "v1" else 704

    @property
    def n_symbols(self) -> int:
        return V1_SYMBOL_COUNT if self.symbol_version == "v1" else V2_SYMBOL_COUNT

    @property
    def samples_per_frame(self) -> int:
        """Waveform samples per 50 Hz latent frame (= product of the upsample rates = hop)."""
        n = 1
        for r in self.upsample_rates:
            n *= r
        return n

    @property
    def samples_per_token(self) -> int:
        """Waveform samples per 25 Hz semantic token at speed 1."""
        return 2 * self.samples_per_frame

    @classmethod
    def from_checkpoint(cls, config: Any, version: SoVITSVersion, path: str = "<config>") -> SoVITSConfig:
        """Build from a checkpoint's ``config`` (nested dict or pickled HParams) and detected version."""
        config = to_plain(config)
        try:
            data, model = config["data"], config["model"]
            if str(model.get("resblock", "1")) != "1":
                raise CheckpointError(f"{path}: resblock type {model['resblock']!r} is not supported (only '1')")
            values: dict[str, Any] = {
                "model_version": version.model_version,
                "symbol_version": version.symbol_version,
                **{k: data[k] for k in ("sampling_rate", "filter_length", "hop_length", "win_length")},
            }
            for f in fields(cls):
                if f.name in model and f.name not in values:
                    values[f.name] = _freeze(model[f.name])
            cfg = cls(**values)
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CheckpointError(f"{path}: malformed SoVITS config ({type(e).__name__}: {e})") from None
        cfg.validate(path)
        return cfg

    def validate(self, path: str = "<config>") -> None:
        """Types and ranges first (so the arithmetic below is safe), then the fields' agreement."""
        self.check_types_and_ranges(path)
        if self.win_length > self.filter_length or self.hop_length > self.filter_length:
            raise CheckpointError(
                f"{path}: win_length and hop_length must not exceed filter_length {self.filter_length}"
            )
        if len(self.upsample_kernel_sizes) != len(self.upsample_rates):
            raise CheckpointError(
                f"{path}: {len(self.upsample_rates)} upsample rates but {len(self.upsample_kernel_sizes)} kernel sizes"
            )
        if len(self.resblock_dilation_sizes) != len(self.resblock_kernel_sizes):
            raise CheckpointError(
                f"{path}: {len(self.resblock_kernel_sizes)} resblock kernel sizes but {len(self.resblock_dilation_sizes)} dilation lists"
            )
        if self.samples_per_frame != self.hop_length:
            raise CheckpointError(
                f"{path}: upsample rates {self.upsample_rates} multiply to {self.samples_per_frame}, "
                f"expected hop_length {self.hop_length}"
            )
        if self.upsample_initial_channel >> len(self.upsample_rates) < 1:
            raise CheckpointError(f"{path}: upsample_initial_channel {self.upsample_initial_channel} too small")
        if any((k - r) % 2 for k, r in zip(self.upsample_kernel_sizes, self.upsample_rates)):
            raise CheckpointError(f"{path}: upsample kernel/rate pairs must differ by an even number")
        if self.hidden_channels % self.n_heads:
            raise CheckpointError(f"{path}: hidden_channels not divisible by n_heads")

    def check_types_and_ranges(self, path: str) -> None:
        for name, (low, high) in INT_RANGES.items():
            _check_int(getattr(self, name), low, high, name, path)
        for name, (most, (low, high)) in TUPLE_RANGES.items():
            values = _check_int_tuple(getattr(self, name), most, name, path)
            for value in values:
                _check_int(value, low, high, f"an entry of {name}", path)
        for dilations in _check_int_tuple(self.resblock_dilation_sizes, 8, "resblock_dilation_sizes", path):
            for value in _check_int_tuple(dilations, 8, "a resblock_dilation_sizes entry", path):
                _check_int(value, 1, MAX_DILATION, "a dilation", path)


def _check_int(value: Any, low: int, high: int, name: str, path: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CheckpointError(f"{path}: config {name} is {value!r} ({type(value).__name__}), expected an integer")
    if not low <= value <= high:
        raise CheckpointError(f"{path}: config {name} is {value}, expected {low}..{high}")


def _check_int_tuple(value: Any, most: int, name: str, path: str) -> tuple:
    if not isinstance(value, tuple) or not 1 <= len(value) <= most:
        raise CheckpointError(f"{path}: config {name} is {value!r}, expected a list of 1..{most} entries")
    return value


def _freeze(value: Any) -> Any:
    """Lists from JSON/pickles -> tuples so the frozen dataclass stays hashable."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def config_dict(config: SoVITSConfig) -> Mapping[str, Any]:
    """The ``model`` section as upstream writes it (lists, not tuples)."""

    def thaw(v: Any) -> Any:
        return [thaw(x) for x in v] if isinstance(v, tuple) else v

    skip = {"model_version", "symbol_version", "sampling_rate", "filter_length", "hop_length", "win_length"}
    return {f.name: thaw(getattr(config, f.name)) for f in fields(config) if f.name not in skip}
