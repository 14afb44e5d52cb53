"""SoVITS hyper-parameters, read from the ``config`` stored in a checkpoint (dict or HParams)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

from ..checkpoint_io import CheckpointError, to_plain
from .version import V1_SYMBOL_COUNT, V2_SYMBOL_COUNT, SoVITSVersion


@dataclass(frozen=True)
class SoVITSConfig:
    model_version: str = "v2"  # v1 | v2 | v2Pro | v2ProPlus
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
    def from_checkpoint(cls, config: Any, version: SoVITSVersion, path: str = "<config>") -> "SoVITSConfig":
        """Build from a checkpoint's ``config`` (nested dict or pickled HParams) and detected version."""
        config = to_plain(config)
        try:
            data, model = config["data"], config["model"]
            if str(model.get("resblock", "1")) != "1":
                raise CheckpointError(f"{path}: resblock type {model['resblock']!r} is not supported (only '1')")
            values: dict[str, Any] = {
                "model_version": version.model_version,
                "symbol_version": version.symbol_version,
                **{k: int(data[k]) for k in ("sampling_rate", "filter_length", "hop_length", "win_length")},
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
