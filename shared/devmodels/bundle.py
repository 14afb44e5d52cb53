"""``gsv-devmodel``: a complete random-weight model directory in the official formats.

The directory has the layout of upstream's ``pretrained_models`` folder (GPT ``.ckpt``, SoVITS
``.pth``, ``chinese-roberta-wwm-ext-large/``, ``chinese-hubert-base/``, ``sv/`` for Pro, the mel
vocoder for v3/v4: ``models--nvidia--bigvgan_v2_24khz_100band_256x/`` or
``gsv-v4-pretrained/vocoder.pth``), plus a
synthetic reference voice (``voices.yml``) and the ``DEVELOPMENT-MODEL.txt`` marker that makes every
node and the sink announce that the audio is noise. ``tiny`` is for tests (seconds to build and run);
``full`` has the official sizes, for benchmarks. ``--lora-rank N`` (v3/v4) adds a LoRA fine-tune
of the bundle's SoVITS where upstream's training puts it, ``SoVITS_weights_<version>/dev_e1_s1_lN.pth``,
used with ``GSV_SOVITS_PATH`` (its base is the bundle's SoVITS, found by default).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

from ..audio.synthetic_voice import speech_like_signal
from ..audio.wav import write_wav
from ..model_paths import BERT_DIR, DEVELOPMENT_MARKER, HUBERT_DIR, OFFICIAL_FILES
from .gpt import write_random_gpt
from .hubert import write_random_hubert
from .mel_sovits import write_random_lora, write_random_mel_sovits
from .mel_vocoders import write_random_mel_vocoder
from .roberta import write_random_roberta
from .sovits import write_random_sovits

REFERENCE_TEXT = "这是一段用来测试的参考音频。"
# Random GPTs rarely emit EOS, so decoding runs to early_stop_num = 50 * max_sec tokens; a short
# max_sec keeps development runs quick while still producing several seconds per segment.
MAX_SEC = {"tiny": 1.6, "full": 6.0}


def lora_path(out: Path, version: str, rank: int) -> Path:
    """Where the bundle's LoRA fine-tune goes (upstream's SoVITS_weights_<version> folder and name pattern)."""
    return out / f"SoVITS_weights_{version}" / f"dev_e1_s1_l{rank}.pth"


def build_bundle(
    out: Path, size: str = "tiny", version: str = "v2", seed: int = 0, lora_rank: int | None = None
) -> Path:
    if size not in MAX_SEC:
        raise ValueError(f"size must be one of {sorted(MAX_SEC)}")
    if version not in OFFICIAL_FILES:
        raise ValueError(f"version must be one of {sorted(OFFICIAL_FILES)}")
    if lora_rank is not None and "vocoder" not in OFFICIAL_FILES[version]:
        raise ValueError(f"LoRA fine-tunes exist for v3 and v4 only, not {version}")
    files = OFFICIAL_FILES[version]
    out.mkdir(parents=True, exist_ok=True)
    gpt_path, sovits_path = out / files["gpt"], out / files["sovits"]
    gpt_path.parent.mkdir(parents=True, exist_ok=True)
    sovits_path.parent.mkdir(parents=True, exist_ok=True)
    write_random_gpt(
        gpt_path, size=size, phoneme_vocab_size=512 if version == "v1" else 732, seed=seed, max_sec=MAX_SEC[size]
    )
    if "vocoder" in files:  # v3/v4: flow-matching SoVITS and its mel vocoder
        write_random_mel_sovits(sovits_path, version=version, size=size, seed=seed)
        (out / files["vocoder"]).parent.mkdir(parents=True, exist_ok=True)
        write_random_mel_vocoder(out / files["vocoder"], version, size=size, seed=seed)
        if lora_rank is not None:
            lora_path(out, version, lora_rank).parent.mkdir(parents=True, exist_ok=True)
            write_random_lora(lora_path(out, version, lora_rank), version, size, lora_rank, seed=seed + 1)
    else:
        write_random_sovits(sovits_path, version=version, size=size, seed=seed)
    write_random_roberta(out / BERT_DIR, size=size)
    write_random_hubert(out / HUBERT_DIR, size=size)
    if "sv" in files:
        from .speaker_verification import write_random_sv

        (out / files["sv"]).parent.mkdir(parents=True, exist_ok=True)
        write_random_sv(out / files["sv"], seed=seed)
    voice = out / "reference" / "voice.wav"
    write_wav(voice, speech_like_signal(4.0, 32000, seed=seed), 32000)
    (out / "voices.yml").write_text(
        yaml.safe_dump(
            {"default": {"ref_audio": "reference/voice.wav", "prompt_text": REFERENCE_TEXT, "prompt_language": "zh"}},
            allow_unicode=True,
        ),
        encoding="utf-8",
    )
    (out / DEVELOPMENT_MARKER).write_text(
        f"Random-weight GPT-SoVITS {version} development models ({size}), written by gsv-devmodel.\n"
        "Their output is NOISE, not speech. Use gsv-download for the official weights.\n",
        encoding="utf-8",
    )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="model directory to write")
    parser.add_argument("--size", choices=sorted(MAX_SEC), default="tiny")
    parser.add_argument("--version", choices=sorted(OFFICIAL_FILES), default="v2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lora-rank", type=int, default=None, help="v3/v4: also write a LoRA fine-tune of this rank")
    args = parser.parse_args(argv)
    if args.lora_rank is not None and not 1 <= args.lora_rank <= 1024:
        parser.error("--lora-rank must be in 1..1024")
    started = time.perf_counter()
    try:
        out = build_bundle(args.out, args.size, args.version, args.seed, args.lora_rank)
    except ValueError as e:
        parser.error(str(e))
    print(
        f"wrote {args.size} {args.version} DEVELOPMENT models (random weights: audio is NOISE) to {out} "
        f"in {time.perf_counter() - started:.1f} s\nuse them with: GSV_MODEL_DIR={out} GSV_VERSION={args.version}"
    )
    if args.lora_rank is not None:
        print(f"the LoRA fine-tune: GSV_SOVITS_PATH={lora_path(out, args.version, args.lora_rank)}")


if __name__ == "__main__":
    main(sys.argv[1:])
