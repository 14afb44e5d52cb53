"""Where the model files are: official pretrained weights, a development bundle, or explicit paths.

One layout for everything: a *model directory* laid out like upstream's
``GPT_SoVITS/pretrained_models`` folder (what ``gsv-download`` fills from the HuggingFace repo
``lj1995/GPT-SoVITS``). A development bundle (``gsv-devmodel``) uses the same layout and adds a
``DEVELOPMENT-MODEL.txt`` marker: its weights are random and its audio is noise.

Environment variables (each optional):

=====================  =====================================================================
``GSV_MODEL_DIR``      the model directory (default ``~/.cache/dora-gpt-sovits/pretrained_models``)
``GSV_VERSION``        v1, v2 (default), v2Pro or v2ProPlus: picks the files inside it
``GSV_GPT_PATH``       a GPT ``.ckpt`` (overrides the directory's)
``GSV_SOVITS_PATH``    a SoVITS ``.pth`` (overrides)
``GSV_BERT_DIR``       a chinese-roberta-wwm-ext-large directory (overrides)
``GSV_HUBERT_DIR``     a chinese-hubert-base directory (overrides)
``GSV_SV_PATH``        the speaker-verification ``.ckpt`` for v2Pro/v2ProPlus (overrides)
=====================  =====================================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEVELOPMENT_MARKER = "DEVELOPMENT-MODEL.txt"
HF_REPO = "lj1995/GPT-SoVITS"

# Files inside the model directory, as named in the official HuggingFace repository.
OFFICIAL_FILES: dict[str, dict[str, str]] = {
    "v1": {
        "gpt": "s1bert25hz-2kh-longer-epoch=68e-step=50232.ckpt",
        "sovits": "s2G488k.pth",
    },
    "v2": {
        "gpt": "gsv-v2final-pretrained/s1bert25hz-5kh-longer-epoch=12-step=369668.ckpt",
        "sovits": "gsv-v2final-pretrained/s2G2333k.pth",
    },
    "v2Pro": {
        "gpt": "s1v3.ckpt",
        "sovits": "v2Pro/s2Gv2Pro.pth",
        "sv": "sv/pretrained_eres2netv2w24s4ep4.ckpt",
    },
    "v2ProPlus": {
        "gpt": "s1v3.ckpt",
        "sovits": "v2Pro/s2Gv2ProPlus.pth",
        "sv": "sv/pretrained_eres2netv2w24s4ep4.ckpt",
    },
}
BERT_DIR = "chinese-roberta-wwm-ext-large"
HUBERT_DIR = "chinese-hubert-base"
BERT_FILES = ("config.json", "tokenizer.json|vocab.txt", "pytorch_model.bin|model.safetensors")
HUBERT_FILES = ("config.json", "pytorch_model.bin|model.safetensors")

ENV_OVERRIDES = {
    "gpt": "GSV_GPT_PATH",
    "sovits": "GSV_SOVITS_PATH",
    "bert": "GSV_BERT_DIR",
    "hubert": "GSV_HUBERT_DIR",
    "sv": "GSV_SV_PATH",
}


class ModelsMissing(FileNotFoundError):
    """Some model files are not where the configuration says; the message says how to fix it."""


@dataclass(frozen=True)
class ModelPaths:
    version: str
    model_dir: Path
    gpt: Path
    sovits: Path
    bert: Path
    hubert: Path
    sv: Path | None
    development: bool  # random weights: every output is noise

    def banner(self) -> str:
        if self.development:
            return (
                "DEVELOPMENT MODEL: random weights from "
                f"{self.model_dir} — the audio is NOISE, not speech. "
                "Run `gsv-download` for the official weights."
            )
        return f"GPT-SoVITS {self.version} weights from {self.model_dir}"


def default_model_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dora-gpt-sovits" / "pretrained_models"


def resolve(env: Mapping[str, str] | None = None, need: tuple[str, ...] = ()) -> ModelPaths:
    """Work out every model path; raise :class:`ModelsMissing` listing what ``need`` lacks.

    ``need`` names the parts a node loads ("gpt", "sovits", "bert", "hubert", "sv"), so each node
    checks only its own files.
    """
    env = os.environ if env is None else env
    version = env.get("GSV_VERSION", "v2")
    if version not in OFFICIAL_FILES:
        raise ModelsMissing(f"GSV_VERSION={version!r} is not supported; choose one of {sorted(OFFICIAL_FILES)}")
    model_dir = Path(env.get("GSV_MODEL_DIR") or default_model_dir()).expanduser()
    files = OFFICIAL_FILES[version]

    def pick(part: str, default: Path | None) -> Path | None:
        override = env.get(ENV_OVERRIDES[part])
        return Path(override).expanduser() if override else default

    paths = ModelPaths(
        version=version,
        model_dir=model_dir,
        gpt=pick("gpt", model_dir / files["gpt"]),
        sovits=pick("sovits", model_dir / files["sovits"]),
        bert=pick("bert", model_dir / BERT_DIR),
        hubert=pick("hubert", model_dir / HUBERT_DIR),
        sv=pick("sv", model_dir / files["sv"] if "sv" in files else None),
        development=(model_dir / DEVELOPMENT_MARKER).exists(),
    )
    problems = [p for part in need for p in _problems(paths, part)]
    if problems:
        raise ModelsMissing(
            "model files missing: "
            + "; ".join(problems)
            + f". Run `gsv-download --version {version}` to fetch the official weights into {model_dir}, "
            "or point GSV_MODEL_DIR (a pretrained_models folder) or GSV_GPT_PATH / GSV_SOVITS_PATH / "
            "GSV_BERT_DIR / GSV_HUBERT_DIR / GSV_SV_PATH at local copies; `gsv-devmodel` makes a "
            "random-weight development bundle for trying the graph."
        )
    return paths


def _problems(paths: ModelPaths, part: str) -> list[str]:
    target: Path | None = getattr(paths, part)
    if part == "sv" and target is None:
        return []
    assert target is not None
    if part in ("bert", "hubert"):
        if not target.is_dir():
            return [f"{part} directory {target} ({ENV_OVERRIDES[part]})"]
        required = BERT_FILES if part == "bert" else HUBERT_FILES
        lacking = [f for f in required if not any((target / alt).is_file() for alt in f.split("|"))]
        return [f"{target}/{f.split('|')[0]} ({ENV_OVERRIDES[part]})" for f in lacking]
    if not target.is_file():
        return [f"{part} {target} ({ENV_OVERRIDES[part]})"]
    return []
