"""TensorRT through ONNX Runtime's TensorRT execution provider: engines are built from the exported
graphs with explicit optimisation profiles (min/opt/max shape per dynamic input) and serialised to
``<onnx dir>/tensorrt/``. ``scripts/build_tensorrt.py`` builds them ahead of time with the very
options the nodes use, so a node start finds them in the cache instead of building for minutes.

Profiles come from the manifest (model sizes) and the limits below; a shape outside a profile is
an error from TensorRT, so the limits are generous: a 60 s utterance, a 10 s reference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .manifest import Manifest

MAX_TEXT = 512  # phones of one GPT segment, prompt phones included
MAX_PROMPT_TOKENS = 256  # ~10 s reference
MAX_STEPS = 1500
MAX_WINDOW_TOKENS = 128  # one vocoder chunk window: history + chunk + lookahead
MAX_SPEC_FRAMES = 1024
MAX_WAV_SAMPLES = 16000 * 12
MAX_BERT_TOKENS = 512

Shape = tuple[int, ...]


def _profile_string(shapes: dict[str, Shape]) -> str:
    return ",".join(f"{name}:{'x'.join(map(str, shape))}" for name, shape in shapes.items())


def profiles(stage: str, facts: dict[str, Any]) -> tuple[dict[str, Shape], dict[str, Shape], dict[str, Shape]]:
    """(min, opt, max) shapes of the dynamic inputs of one exported graph."""
    from .mel_graph import MEL_STAGES
    from .mel_graph import profiles as mel_profiles

    if stage in MEL_STAGES:  # v3/v4: the DiT's graphs and the mel vocoder
        return mel_profiles(stage, facts)
    if stage in ("gpt_prefill", "gpt_step"):
        v, layers, heads, hd, bert = (
            facts["vocab_size"],
            facts["n_layer"],
            facts["n_head"],
            facts["head_dim"],
            facts["bert_dim"],
        )
        fixed = {"seen": (1, v), "noise": (1, v)}
        if stage == "gpt_prefill":

            def at(t: int, p: int) -> dict[str, Shape]:
                return {"phone_ids": (1, t), "bert": (1, bert, t), "prompt": (1, p), **fixed}

            return at(1, 0), at(64, 100), at(MAX_TEXT, MAX_PROMPT_TOKENS)

        def past(n: int) -> dict[str, Shape]:
            return {"past_k": (n, layers, 1, heads, hd), "past_v": (n, layers, 1, heads, hd), **fixed}

        return past(1), past(400), past(MAX_TEXT + MAX_PROMPT_TOKENS + MAX_STEPS)
    if stage == "sovits_condition":
        return ({"spec": (1, 1025, 1)}, {"spec": (1, 1025, 300)}, {"spec": (1, 1025, MAX_SPEC_FRAMES)})
    if stage == "sovits_content":

        def content(n: int, m: int) -> dict[str, Shape]:
            return {"codes": (1, 1, n), "phone_ids": (1, m)}

        return content(1, 1), content(60, 64), content(MAX_WINDOW_TOKENS, MAX_TEXT)
    if stage == "sovits_window":
        c = facts["inter_channels"]

        def window(f: int) -> dict[str, Shape]:
            return {"window": (1, facts["hidden_channels"], f), "eps": (1, c, f)}

        return window(1), window(160), window(2 * MAX_WINDOW_TOKENS + 64)
    if stage == "bert":

        def tokens(n: int) -> dict[str, Shape]:
            return {k: (1, n) for k in ("input_ids", "attention_mask", "token_type_ids")}

        return tokens(3), tokens(40), tokens(MAX_BERT_TOKENS)
    if stage == "hubert":
        return {"wav": (1, 16000)}, {"wav": (1, 16000 * 6)}, {"wav": (1, MAX_WAV_SAMPLES)}
    raise ValueError(f"no TensorRT profile for stage {stage!r}")


def provider_options(onnx_dir: Path, stage: str, manifest: Manifest) -> dict[str, Any]:
    """TensorRT provider options for one graph: explicit profiles, engine cache, precision."""
    low, opt, high = profiles(stage, manifest.facts)
    cache = Path(onnx_dir) / "tensorrt"
    cache.mkdir(parents=True, exist_ok=True)
    return {
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache),
        "trt_fp16_enable": manifest.precision == "float16",
        "trt_profile_min_shapes": _profile_string(low),
        "trt_profile_opt_shapes": _profile_string(opt),
        "trt_profile_max_shapes": _profile_string(high),
    }


def options_for(
    onnx_dir: Path, stages: tuple[str, ...], precision: str, source: Path | None
) -> dict[str, dict[str, Any]]:
    """Provider options for every graph of a node (after checking each manifest)."""
    from .manifest import checked_graph

    return {
        stage: provider_options(onnx_dir, stage, checked_graph(onnx_dir, stage, precision, source)[1])
        for stage in stages
    }


def gpt_trt_options(
    onnx_dir: Path, source: Path | None = None, precision: str = "float32"
) -> dict[str, dict[str, Any]]:
    return options_for(onnx_dir, ("gpt_prefill", "gpt_step"), precision, source)


def build_engines(onnx_dir: Path, precision: str = "float32", device: str = "cuda:0", source_env=None) -> list[str]:
    """Build (or find in the cache) the TensorRT engine of every exported graph in ``onnx_dir``.

    Opens each graph on the TensorRT provider with the nodes' own options and runs it once at the
    profile's opt shapes, which makes ONNX Runtime build and serialise the engine. Raises
    :class:`BackendUnavailable` with the reason when TensorRT or the GPU is missing.
    """
    import numpy as np

    from .config import BackendChoice
    from .errors import ExportMissing
    from .manifest import Manifest, manifest_path
    from .ort import open_session

    choice = BackendChoice("tensorrt", device, precision, Path(onnx_dir))
    graphs = sorted(Path(onnx_dir).glob(f"*.{precision}.onnx"))
    if not graphs:
        raise ExportMissing(f"no {precision} graphs in {onnx_dir}; run scripts/export_onnx.py first")
    built = []
    for graph in graphs:
        manifest = Manifest.read(manifest_path(graph))
        options = provider_options(onnx_dir, manifest.stage, manifest)
        session = open_session(graph, choice, trt_options=options)
        _, opt, _ = profiles(manifest.stage, manifest.facts)
        feed = {}
        for spec in manifest.inputs:
            shape = opt.get(spec.name) or [d if isinstance(d, int) else 1 for d in spec.shape]
            dtype = {"float32": np.float32, "float16": np.float16, "int64": np.int64, "bool": np.bool_}[spec.dtype]
            feed[spec.name] = np.ones(shape, dtype=dtype) if spec.dtype != "bool" else np.zeros(shape, dtype=dtype)
        session.run(None, feed)
        built.append(manifest.stage)
    return built


def main(argv: list[str] | None = None) -> None:
    import argparse
    import sys

    from .errors import BackendError

    parser = argparse.ArgumentParser(
        description="Build TensorRT engines (explicit shape profiles) for exported graphs."
    )
    parser.add_argument("--onnx-dir", type=Path, required=True)
    parser.add_argument("--precision", choices=("float32", "float16"), default="float16")
    parser.add_argument("--device", default="cuda:0")
    args = parser.parse_args(argv)
    try:
        built = build_engines(args.onnx_dir, args.precision, args.device)
    except BackendError as e:
        sys.exit(f"build_tensorrt: {e}")
    print(f"TensorRT engines for {', '.join(built)} in {args.onnx_dir / 'tensorrt'}")
