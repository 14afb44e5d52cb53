"""``gsv-devmodel``: a complete random-weight model directory in the official formats.

The directory has the layout of upstream's ``pretrained_models`` folder (GPT ``.ckpt``, SoVITS
``.pth``, ``chinese-roberta-wwm-ext-large/``, ``chinese-hubert-base/``, ``sv/`` for Pro), plus a
synthetic reference voice (``voices.yml``) and the ``DEVELOPMENT-MODEL.txt`` marker that makes every
node and the sink announce that the audio is noise. ``tiny`` is for tests (seconds to build and run);
``full`` has the official sizes, for benchmarks.
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
from .roberta import write_random_roberta
from .sovits import write_random_sovits

REFERENCE_TEXT = "这是一段用来测试的参考音频。"
# Random GPTs rarely emit EOS, so decoding runs to early_stop_num = 50 * max_sec tokens; a short
# max_sec keeps development runs quick while still producing several seconds per segment.
MAX_SEC = {"tiny": 1.6, "full": 6.0}


def build_bundle(out: Path, size: str = "tiny", version: str = "v2", seed: int = 0) -> Path:
    if size not in MAX_SEC:
        raise ValueError(f"size must be one of {sorted(MAX_SEC)}")
    files = OFFICIAL_FILES[version]
    out.mkdir(parents=True, exist_ok=True)
    gpt_path, sovits_path = out / files["gpt"], out / files["sovits"]
    gpt_path.parent.mkdir(parents=True, exist_ok=True)
    sovits_path.parent.mkdir(parents=True, exist_ok=True)
    write_random_gpt(
        gpt_path, size=size, phoneme_vocab_size=512 if version == "v1" else 732, seed=seed, max_sec=MAX_SEC[size]
    )
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
    args = parser.parse_args(argv)
    started = time.perf_counter()
    out = build_bundle(args.out, args.size, args.version, args.seed)
    print(
        f"wrote {args.size} {args.version} DEVELOPMENT models (random weights: audio is NOISE) to {out} "
        f"in {time.perf_counter() - started:.1f} s\nuse them with: GSV_MODEL_DIR={out} GSV_VERSION={args.version}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
