"""Random-weight CN-HuBERT directories in the Hugging Face layout of ``chinese-hubert-base``.

For development and tests without the real model. **The weights are random**: features are
well-scaled but meaningless. The directory holds ``config.json``, ``preprocessor_config.json`` and
``pytorch_model.bin`` (fp16), with the positional convolution stored under the legacy weight-norm
names ``weight_g``/``weight_v`` exactly like the official file.

    python -m dora_gpt_sovits.devmodels.hubert out_dir --size full
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Literal

import torch

SIZES: dict[str, dict] = {
    # chinese-hubert-base (TencentGameMate): HuBERT-base geometry.
    "full": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "conv_dim": [512] * 7,
        "num_conv_pos_embeddings": 128,
        "num_conv_pos_embedding_groups": 16,
    },
    # Like the parity fixture hubert_tiny/: hidden stays 768 because SoVITS' ssl_proj needs it.
    "tiny": {
        "hidden_size": 768,
        "num_hidden_layers": 1,
        "num_attention_heads": 12,
        "intermediate_size": 256,
        "conv_dim": [64] * 7,
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 16,
    },
}
COMMON = {
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_bias": False,
    "feat_extract_norm": "group",
    "feat_extract_activation": "gelu",
    "do_stable_layer_norm": False,
    "feat_proj_layer_norm": True,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
    "architectures": ["HubertModel"],
}
PREPROCESSOR = {
    "do_normalize": True,
    "feature_extractor_type": "Wav2Vec2FeatureExtractor",
    "feature_size": 1,
    "padding_side": "right",
    "padding_value": 0.0,
    "return_attention_mask": False,
    "sampling_rate": 16000,
}
POS_CONV = "encoder.pos_conv_embed.conv."


def write_random_hubert(
    directory: str | os.PathLike[str], size: Literal["tiny", "full"] = "tiny", seed: int = 0
) -> None:
    """Write config.json, preprocessor_config.json and pytorch_model.bin into ``directory``."""
    from transformers import HubertConfig, HubertModel

    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = HubertConfig(**SIZES[size], **COMMON)
    with torch.random.fork_rng(devices=[]):  # HF initialisers draw from the global generator
        torch.manual_seed(seed)
        state = HubertModel(config).state_dict()

    weights = {}
    for name, tensor in state.items():
        # Legacy weight-norm names, as in the official checkpoint.
        name = name.replace(POS_CONV + "parametrizations.weight.original0", POS_CONV + "weight_g")
        name = name.replace(POS_CONV + "parametrizations.weight.original1", POS_CONV + "weight_v")
        weights[name] = tensor.detach().half().contiguous()

    config_json = config.to_dict()
    config_json.pop("torch_dtype", None)
    config_json["dtype"] = "float16"
    (directory / "config.json").write_text(json.dumps(config_json, indent=2, sort_keys=True) + "\n")
    (directory / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR, indent=2) + "\n")
    torch.save(weights, directory / "pytorch_model.bin")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write_random_hubert(args.directory, args.size, args.seed)


if __name__ == "__main__":
    main()
