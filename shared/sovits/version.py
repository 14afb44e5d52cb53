"""Which SoVITS generation a checkpoint file holds, decided the way upstream GPT-SoVITS decides it.

1. MD5 of the first 8192 bytes against the official pretrained files;
2. else a two-byte header tag written over the zip magic ``PK``;
3. else the file size (old fine-tunes: < 82 978 KiB -> v1, < 700 MiB -> v2, larger -> v3);
4. then the phone-symbol set from the rows of ``enc_p.text_embedding.weight`` (322 -> v1, else v2),
   which also becomes the model version unless the file is Pro/v3/v4.

One addition: a state dict holding ``sv_emb.weight`` is a Pro model whatever steps 1-3 said
(upstream would crash on such a file; we can read it).

Flow-matching models (v3, v4: ``cfm.*`` tensors) share one architecture and differ only in the
feature upsampling and the vocoder, so the weights cannot tell them apart. Upstream knows the
pretrained files by hash and fine-tunes by tag (``02`` v3, ``03`` v3 LoRA, ``04`` v4 LoRA); a file
with neither (a v4 base that is not the official one, a development model) is read by its config's
``model.version`` or, failing that, the version the caller expects (``GSV_VERSION``). A file marked
one way and expected the other is refused: a v3 model vocoded as v4 is noise, not an error.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..checkpoint_io import HEADER_TAGS, CheckpointError, RawCheckpoint, to_plain

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
SUPPORTED_MODEL_VERSIONS = ("v1", "v2", "v2Pro", "v2ProPlus", "v3", "v4")
FLOW_MATCHING_VERSIONS = ("v3", "v4")


@dataclass(frozen=True)
class SoVITSVersion:
    symbol_version: str  # "v1" (322 phone symbols) or "v2" (732)
    model_version: str  # "v1" | "v2" | "v2Pro" | "v2ProPlus" | "v3" | "v4"
    is_lora: bool  # v3/v4 LoRA fine-tune: merged into its base model's weights at load
    header_or_hash_version: str  # model version from steps 1-3 alone (before looking at weights)
    source: str  # which rule decided steps 1-3: "hash", "tag:05", "size"

    @property
    def is_pro(self) -> bool:
        return self.model_version in ("v2Pro", "v2ProPlus")

    @property
    def is_flow_matching(self) -> bool:
        return self.model_version in FLOW_MATCHING_VERSIONS


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


def detect_version(
    raw: RawCheckpoint, state: Mapping[str, object], config: Any = None, expected: str | None = None
) -> SoVITSVersion:
    """All four steps. ``config`` is the file's config (for ``model.version``); ``expected`` the
    version the caller was told to serve (``GSV_VERSION``), checked against what the file says."""
    _, file_model_version, is_lora, source = version_from_file(raw)
    if is_lora or file_model_version in FLOW_MATCHING_VERSIONS or any(k.startswith("cfm.") for k in state):
        return flow_matching_version(raw, state, config, expected, file_model_version, is_lora, source)

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
    if expected in FLOW_MATCHING_VERSIONS:
        raise CheckpointError(f"{raw.path}: this is a SoVITS {model_version} model (no cfm.* weights), not {expected}")
    return SoVITSVersion(symbol_version, model_version, is_lora, file_model_version, source)


def flow_matching_version(
    raw: RawCheckpoint,
    state: Mapping[str, object],
    config: Any,
    expected: str | None,
    file_model_version: str,
    is_lora: bool,
    source: str,
) -> SoVITSVersion:
    """v3 or v4: the hash or tag if there is one, else the config's ``model.version``, else
    ``expected``; any two that disagree are refused with the file's claim and where it came from."""
    if not any(k.startswith("cfm.") for k in state):
        raise CheckpointError(
            f"{raw.path}: marked {file_model_version}{' LoRA' if is_lora else ''} by {source} "
            "but holds no flow-matching (cfm.*) weights"
        )
    claims = []
    if source != "size" and file_model_version in FLOW_MATCHING_VERSIONS:
        claims.append((file_model_version, source))
    config_version = _config_model_version(config)
    if config_version in FLOW_MATCHING_VERSIONS:
        claims.append((config_version, "config model.version"))
    if source == "size" and file_model_version in FLOW_MATCHING_VERSIONS:
        claims.append((file_model_version, "size"))  # upstream's last resort: > 700 MiB is v3
    if not claims:
        if expected not in FLOW_MATCHING_VERSIONS:
            raise CheckpointError(
                f"{raw.path}: a flow-matching SoVITS model (v3 or v4) with no version mark; "
                "set GSV_VERSION=v3 or GSV_VERSION=v4"
            )
        claims.append((expected, "GSV_VERSION"))
    version, why = claims[0]
    if expected in FLOW_MATCHING_VERSIONS and expected != version:
        raise CheckpointError(f"{raw.path}: this is a SoVITS {version} model (by {why}), not {expected}")
    if expected is not None and expected not in FLOW_MATCHING_VERSIONS and expected in SUPPORTED_MODEL_VERSIONS:
        raise CheckpointError(f"{raw.path}: this is a SoVITS {version} model (by {why}), not {expected}")
    if is_lora and "lora_rank" not in (raw.content if isinstance(raw.content, Mapping) else {}):
        raise CheckpointError(f"{raw.path}: marked as a {version} LoRA fine-tune by {source} but has no lora_rank")
    return SoVITSVersion("v2", version, is_lora, file_model_version, why if source == "size" else source)


def _config_model_version(config: Any) -> str | None:
    try:
        version = to_plain(config)["model"]["version"]
    except (KeyError, TypeError, AttributeError):
        return None
    return version if isinstance(version, str) else None


def pro_variant(state: Mapping[str, object]) -> str:
    # ProPlus is the only variant whose first upsampler has kernel 20 (v2Pro keeps 16).
    first_up = state.get("dec.ups.0.weight_v", state.get("dec.ups.0.weight"))
    return "v2ProPlus" if first_up is not None and first_up.dim() and first_up.shape[-1] == 20 else "v2Pro"
