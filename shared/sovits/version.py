"""Which SoVITS generation a checkpoint file holds, decided the way upstream GPT-SoVITS decides it.

1. MD5 of the first 8192 bytes against the official pretrained files;
2. else a two-byte header tag written over the zip magic ``PK``;
3. else the file size (old fine-tunes: < 82 978 KiB -> v1, < 700 MiB -> v2, larger -> v3);
4. then the phone-symbol set from the rows of ``enc_p.text_embedding.weight`` (322 -> v1, else v2),
   which also becomes the model version unless the file is Pro/v3/v4.

One addition: a state dict holding ``sv_emb.weight`` is a Pro model whatever steps 1-3 said
(upstream would crash on such a file; we can read it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from ..checkpoint_io import HEADER_TAGS, CheckpointError, RawCheckpoint

# MD5 of the first 8192 bytes of the official pretrained SoVITS files -> (symbols, model, lora).
KNOWN_FILE_HASHES: dict[str, tuple[str, str, bool]] = {
    "dc3c97e17592963677a4a1681f30c653": ("v2", "v2", False),  # s2G488k.pth (v1 weights)
    "43797be674a37c1c83ee81081941ed0f": ("v2", "v3", False),  # s2Gv3.pth
    "6642b37f3dbb1f76882b69937c95a5f3": ("v2", "v2", False),  # s2G2333k.pth
    "4f26b9476d0c5033e04162c486074374": ("v2", "v4", False),  # s2Gv4.pth
    "c7e9fce2223f3db685cdfa1e6368728a": ("v2", "v2Pro", False),  # s2Gv2Pro.pth
    "66b313e39455b57ab1b0bc0b239c9d0a": ("v2", "v2ProPlus", False),  # s2Gv2ProPlus.pth
}

V1_SIZE_LIMIT = 82978 * 1024
V2_SIZE_LIMIT = 700 * 1024 * 1024
V1_SYMBOL_COUNT, V2_SYMBOL_COUNT = 322, 732
SUPPORTED_MODEL_VERSIONS = ("v1", "v2", "v2Pro", "v2ProPlus")
UNSUPPORTED_MESSAGE = "SoVITS v3/v4 checkpoints are not supported yet"


@dataclass(frozen=True)
class SoVITSVersion:
    symbol_version: str  # "v1" (322 phone symbols) or "v2" (732)
    model_version: str  # "v1" | "v2" | "v2Pro" | "v2ProPlus"
    is_lora: bool
    header_or_hash_version: str  # model version from steps 1-3 alone (before looking at weights)
    source: str  # which rule decided steps 1-3: "hash", "tag:05", "size"

    @property
    def is_pro(self) -> bool:
        return self.model_version in ("v2Pro", "v2ProPlus")


def version_from_file(raw: RawCheckpoint) -> tuple[str, str, bool, str]:
    """Steps 1-3: (symbol version, model version, is_lora, source) from bytes and size only."""
    digest = hashlib.md5(raw.head_bytes).hexdigest()
    if digest in KNOWN_FILE_HASHES:
        return (*KNOWN_FILE_HASHES[digest], "hash")
    if raw.header_tag is not None:
        return (*HEADER_TAGS[raw.header_tag], f"tag:{raw.header_tag.decode()}")
    if raw.size_bytes < V1_SIZE_LIMIT:
        return "v1", "v1", False, "size"
    if raw.size_bytes < V2_SIZE_LIMIT:
        return "v2", "v2", False, "size"
    return "v2", "v3", False, "size"


def detect_version(raw: RawCheckpoint, state: Mapping[str, object]) -> SoVITSVersion:
    """All four steps; refuses v3/v4 (and LoRA) files with a one-line :class:`CheckpointError`."""
    _, file_model_version, is_lora, source = version_from_file(raw)
    if is_lora or file_model_version in ("v3", "v4") or any(k.startswith("cfm.") for k in state):
        raise CheckpointError(f"{raw.path}: {UNSUPPORTED_MESSAGE} (detected {file_model_version} by {source})")

    embedding = state.get("enc_p.text_embedding.weight")
    if embedding is None:
        raise CheckpointError(f"{raw.path}: not a SoVITS v1/v2 model (no enc_p.text_embedding.weight)")
    if embedding.dim() != 2:
        raise CheckpointError(
            f"{raw.path}: enc_p.text_embedding.weight has shape {list(embedding.shape)}, expected 2 axes"
        )
    n_symbols = embedding.shape[0]
    if n_symbols not in (V1_SYMBOL_COUNT, V2_SYMBOL_COUNT):
        raise CheckpointError(f"{raw.path}: phone embedding has {n_symbols} rows, expected 322 (v1) or 732 (v2)")
    symbol_version = "v1" if n_symbols == V1_SYMBOL_COUNT else "v2"

    model_version = file_model_version if "Pro" in file_model_version else symbol_version
    if "sv_emb.weight" in state and "Pro" not in model_version:
        model_version = pro_variant(state)
    return SoVITSVersion(symbol_version, model_version, is_lora, file_model_version, source)


def pro_variant(state: Mapping[str, object]) -> str:
    # ProPlus is the only variant whose first upsampler has kernel 20 (v2Pro keeps 16).
    first_up = state.get("dec.ups.0.weight_v", state.get("dec.ups.0.weight"))
    return "v2ProPlus" if first_up is not None and first_up.dim() and first_up.shape[-1] == 20 else "v2Pro"
