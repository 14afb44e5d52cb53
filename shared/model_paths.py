"""Where the model files are: official pretrained weights, a development bundle, or explicit paths.

One layout for everything: a *model directory* laid out like upstream's
``GPT_SoVITS/pretrained_models`` folder (what ``gsv-download`` fills from the HuggingFace repo
``lj1995/GPT-SoVITS``). A development bundle (``gsv-devmodel``) uses the same layout and adds a
``DEVELOPMENT-MODEL.txt`` marker: its weights are random and its audio is noise.

Environment variables (each optional):

========================  =========================================================================================
``GSV_MODEL_DIR``         the model directory (default ``~/.cache/dora-gpt-sovits/pretrained_models``)
``GSV_VERSION``           v1, v2 (default), v2Pro, v2ProPlus, v3 or v4: picks the files inside it
``GSV_GPT_PATH``          a GPT ``.ckpt`` (overrides the directory's)
``GSV_SOVITS_PATH``       a SoVITS ``.pth`` (overrides)
``GSV_BERT_DIR``          a chinese-roberta-wwm-ext-large directory (overrides)
``GSV_HUBERT_DIR``        a chinese-hubert-base directory (overrides)
``GSV_SV_PATH``           the speaker-verification ``.ckpt`` for v2Pro/v2ProPlus (overrides)
``GSV_VOCODER_PATH``      the v3/v4 mel vocoder (overrides): v3 a BigVGAN folder with ``config.json``
                          and ``bigvgan_generator.pt``, v4 a ``vocoder.pth``
``GSV_SOVITS_BASE_PATH``  the pretrained v3/v4 SoVITS that a LoRA fine-tune in ``GSV_SOVITS_PATH``
                          is merged into (default: the directory's ``s2Gv3.pth`` / ``gsv-v4-pretrained/s2Gv4.pth``)
========================  =========================================================================================

Layouts of v3 and v4 (as upstream's code at 48b1a01 and the HuggingFace repository name them)::

    s1v3.ckpt                                          GPT (v3, v4, v2Pro, v2ProPlus)
    s2Gv3.pth                                          SoVITS v3
    models--nvidia--bigvgan_v2_24khz_100band_256x/     v3 vocoder: config.json, bigvgan_generator.pt
    gsv-v4-pretrained/s2Gv4.pth                        SoVITS v4
    gsv-v4-pretrained/vocoder.pth                      v4 vocoder
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
    "v3": {
        "gpt": "s1v3.ckpt",
        "sovits": "s2Gv3.pth",
        "vocoder": "models--nvidia--bigvgan_v2_24khz_100band_256x",  # a folder (BIGVGAN_FILES)
    },
    "v4": {
        "gpt": "s1v3.ckpt",
        "sovits": "gsv-v4-pretrained/s2Gv4.pth",
        "vocoder": "gsv-v4-pretrained/vocoder.pth",
    },
}
# Versions whose vocoder is a folder rather than one file, and what the folder must hold.
VOCODER_FOLDER_VERSIONS = ("v3",)
BIGVGAN_FILES = ("config.json", "bigvgan_generator.pt")
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
    "vocoder": "GSV_VOCODER_PATH",
    "sovits_base": "GSV_SOVITS_BASE_PATH",
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
    vocoder: Path | None = None  # v3: BigVGAN folder; v4: vocoder.pth; None for v1/v2/Pro
    sovits_base: Path | None = None  # v3/v4: the pretrained SoVITS a LoRA fine-tune is merged into

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

    ``need`` names the parts a node loads ("gpt", "sovits", "bert", "hubert", "sv", and for v3/v4
    "vocoder", "sovits_base"), so each node checks only its own files. Parts a version does not
    have ("sv" before v2Pro, "vocoder"/"sovits_base" before v3) are never missing.
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
        vocoder=pick("vocoder", model_dir / files["vocoder"]) if "vocoder" in files else None,
        sovits_base=pick("sovits_base", model_dir / files["sovits"]) if "vocoder" in files else None,
    )
    problems = [p for part in need for p in _problems(paths, part)]
    if problems:
        raise ModelsMissing(
            "model files missing: "
            + "; ".join(problems)
            + f". Run `gsv-download --version {version}` to fetch the official weights into {model_dir}, "
            "or point GSV_MODEL_DIR (a pretrained_models folder) or GSV_GPT_PATH / GSV_SOVITS_PATH / "
            "GSV_BERT_DIR / GSV_HUBERT_DIR / GSV_SV_PATH"
            + (" / GSV_VOCODER_PATH / GSV_SOVITS_BASE_PATH" if "vocoder" in files else "")
            + " at local copies; `gsv-devmodel` makes a random-weight development bundle for trying the graph."
        )
    return paths


def _problems(paths: ModelPaths, part: str) -> list[str]:
    target: Path | None = getattr(paths, part)
    if part in ("sv", "vocoder", "sovits_base") and target is None:
        return []  # this version has no such part
    assert target is not None
    env = ENV_OVERRIDES[part]
    if part == "vocoder" and paths.version in VOCODER_FOLDER_VERSIONS:
        holds = " and ".join(BIGVGAN_FILES)
        if not target.is_dir():
            what = "is a file, not a folder" if target.exists() else "missing"
            return [f"{paths.version} vocoder folder {target} {what} (a BigVGAN folder holding {holds}; {env})"]
        lacking = [f for f in BIGVGAN_FILES if not (target / f).is_file()]
        return [f"{target}/{f} (the {paths.version} vocoder folder holds {holds}; {env})" for f in lacking]
    if part in ("bert", "hubert"):
        if not target.is_dir():
            return [f"{part} directory {target} ({env})"]
        required = BERT_FILES if part == "bert" else HUBERT_FILES
        lacking = [f for f in required if not any((target / alt).is_file() for alt in f.split("|"))]
        return [f"{target}/{f.split('|')[0]} ({env})" for f in lacking]
    if not target.is_file():
        label = {"vocoder": f"{paths.version} vocoder", "sovits_base": "SoVITS base model (of a LoRA fine-tune)"}
        return [f"{label.get(part, part)} {target} ({env})"]
    return []
