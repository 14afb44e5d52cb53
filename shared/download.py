"""``gsv-download``: fetch the official pretrained GPT-SoVITS weights into the model directory.

Files come from the HuggingFace repository ``lj1995/GPT-SoVITS`` and land in the same layout as
upstream's ``GPT_SoVITS/pretrained_models`` (which is what every node reads; see model_paths).
v3 adds the BigVGAN folder ``models--nvidia--bigvgan_v2_24khz_100band_256x/`` (``config.json``,
``bigvgan_generator.pt``), v4 ``gsv-v4-pretrained/vocoder.pth``; both take the GPT ``s1v3.ckpt``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .model_paths import (
    BERT_DIR,
    BIGVGAN_FILES,
    HF_REPO,
    HUBERT_DIR,
    OFFICIAL_FILES,
    VOCODER_FOLDER_VERSIONS,
    default_model_dir,
)

BERT_FILES = ["config.json", "tokenizer.json", "pytorch_model.bin"]
HUBERT_FILES = ["config.json", "preprocessor_config.json", "pytorch_model.bin"]


def files_for(version: str) -> list[str]:
    """Every file of ``version`` as a path in the repository (a vocoder folder expands to its files)."""
    official = OFFICIAL_FILES[version]
    files = []
    for part, name in official.items():
        if part == "vocoder" and version in VOCODER_FOLDER_VERSIONS:
            files += [f"{name}/{f}" for f in BIGVGAN_FILES]
        else:
            files.append(name)
    files = list(dict.fromkeys(files))
    files += [f"{BERT_DIR}/{f}" for f in BERT_FILES]
    files += [f"{HUBERT_DIR}/{f}" for f in HUBERT_FILES]
    return files


def download(version: str, model_dir: Path) -> None:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise SystemExit("error: huggingface_hub is not installed (pip install huggingface_hub)") from None
    model_dir.mkdir(parents=True, exist_ok=True)
    for name in files_for(version):
        target = model_dir / name
        if target.is_file():
            print(f"have {target}")
            continue
        print(f"fetching {HF_REPO}/{name}")
        try:
            hf_hub_download(HF_REPO, name, local_dir=model_dir)  # shows a tqdm progress bar
        except Exception as e:  # offline, no such file, permission...
            raise SystemExit(
                f"error: could not download {name} from {HF_REPO}: {type(e).__name__}: {str(e).splitlines()[0]}\n"
                f"Download the files by hand into {model_dir} (same layout) or set GSV_MODEL_DIR to a local copy."
            ) from None
    print(f"done: GSV_MODEL_DIR={model_dir} GSV_VERSION={version}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default="v2", choices=sorted(OFFICIAL_FILES))
    parser.add_argument("--model-dir", type=Path, default=default_model_dir())
    args = parser.parse_args(argv)
    download(args.version, args.model_dir.expanduser())


if __name__ == "__main__":
    main(sys.argv[1:])
