"""Export every heavy stage to ONNX from official checkpoints (or a development bundle), with manifests.

    python scripts/export_onnx.py [--out DIR] [--precision float32 float16] [--stages gpt vocoder bert hubert]

For ``GSV_VERSION=v3``/``v4`` the vocoder stage is the DiT (three graphs) and the mel vocoder
(backends/mel_graph.py).

Model files are found exactly as the nodes find them (``GSV_MODEL_DIR``, ``GSV_VERSION``,
``GSV_GPT_PATH``...; ``--model-dir`` sets ``GSV_MODEL_DIR``). The default ``--out`` is
``<model dir>/onnx``, where the nodes look unless ``GSV_ONNX_DIR`` says otherwise. Exports are traced on the CPU; float16 graphs from a half-precision copy of the model.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import torch

from ..model_paths import ModelsMissing, resolve
from ..settings import DTYPES as SETTINGS_DTYPES
from .export import write_graph

STAGES = ("gpt", "vocoder", "bert", "hubert")
DTYPES = {name: SETTINGS_DTYPES[name] for name in ("float32", "float16")}  # what ONNX export supports
# the model files each stage's export reads ("vocoder" and "sovits_base" exist for v3/v4 only)
NEEDS = {"gpt": ("gpt",), "vocoder": ("sovits", "vocoder", "sovits_base"), "bert": ("bert",), "hubert": ("hubert",)}
log = logging.getLogger("gsv.export")


def export_stage(stage: str, paths, out: Path, precision: str, max_positions: int) -> list[Path]:
    dtype = DTYPES[precision]
    if stage == "gpt":
        from ..gpt.loader import load_gpt
        from .gpt_graph import export_gpt

        source, graphs = paths.gpt, export_gpt(load_gpt(paths.gpt), max_positions, dtype)
    elif stage == "vocoder" and paths.vocoder is not None:  # v3/v4: the DiT's graphs and the mel vocoder's
        from .mel_graph import export_mel

        return export_mel(paths, out, precision, dtype)
    elif stage == "vocoder":
        from ..sovits.loader import load_sovits
        from .sovits_graph import export_sovits

        source, graphs = paths.sovits, export_sovits(load_sovits(paths.sovits), dtype)
    elif stage == "bert":
        from ..encoders.bert import load_bert
        from .encoder_graph import export_bert

        source, graphs = paths.bert, export_bert(load_bert(paths.bert).model, dtype)
    elif stage == "hubert":
        from ..encoders.hubert import load_hubert
        from .encoder_graph import export_hubert

        source, graphs = paths.hubert, export_hubert(load_hubert(paths.hubert), dtype)
    else:
        raise ValueError(f"unknown stage {stage!r}; choose from {', '.join(STAGES)}")
    return [write_graph(data, out, name, precision, source, facts) for name, (data, facts) in graphs.items()]


def export_all(out: Path, stages=STAGES, precisions=("float32",), max_positions: int = 4096, env=None) -> list[Path]:
    paths = resolve(env, need=tuple(part for s in stages for part in NEEDS[s]))
    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        for precision in precisions:
            for stage in stages:
                started = time.perf_counter()
                files = export_stage(stage, paths, out, precision, max_positions)
                log.info(
                    "%s %s: %s (%.1f s)",
                    stage,
                    precision,
                    ", ".join(f.name for f in files),
                    time.perf_counter() - started,
                )
                written += files
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out",
        type=Path,
        help="folder for the .onnx files and manifests (default: <model dir>/onnx, where the nodes look)",
    )
    parser.add_argument("--model-dir", type=Path, help="upstream pretrained_models folder (default: GSV_MODEL_DIR)")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--precision", nargs="+", choices=sorted(DTYPES), default=["float32"])
    parser.add_argument("--max-positions", type=int, default=4096, help="GPT sine-table size baked into the graphs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    env = dict(os.environ)
    if args.model_dir:
        env["GSV_MODEL_DIR"] = str(args.model_dir)
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    try:
        out = args.out or resolve(env).model_dir / "onnx"
        written = export_all(out, tuple(args.stages), tuple(args.precision), args.max_positions, env)
    except ModelsMissing as e:
        sys.exit(f"export_onnx: {e}")
    print(f"wrote {len(written)} graphs with manifests to {out}")


if __name__ == "__main__":
    main()
