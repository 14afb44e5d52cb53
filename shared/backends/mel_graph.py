"""SoVITS v3/v4 as four ONNX graphs: the DiT's cached sampling path and the mel vocoder.

* ``mel_dit_text``: features [B, T, text_dim] -> text [B, T, text_dim] (``DiT.embed_text``, once per CFM call);
* ``mel_dit_step``: dt [B] -> step code [B, dim] (``DiT.embed_step``, once per CFM call);
* ``mel_dit_velocity``: x, cond [B, T, mel_dim], text, t [B], step -> v [B, T, mel_dim] (``DiT.velocity``,
  once per Euler step);
* ``mel_vocoder``: log-mel [B, 100, F] -> wav [B, 1, F * hop] (BigVGAN for v3, the HiFi-GAN for v4).

Three DiT graphs rather than one: the per-step graph then holds only what changes per step (the
transformer), not the ConvNeXt text branch or the dt MLP, which ``cfm.sample_mel`` computes once
per call; one graph would redo them every step, and one graph with a flag would carry both paths.
T (and B) are dynamic; padded batches (``lengths``) are not exported: the nodes sample one segment
at a time. Each graph's facts carry its max |graph - torch float32| measured at export on random
inputs (``max_abs_error``), so a manifest says how close the graph is to the module it replaces.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import torch
from torch import nn

from .export import onnx_bytes
from .manifest import sha256_of

DIT_STAGES = ("mel_dit_text", "mel_dit_step", "mel_dit_velocity")
VOCODER_STAGE = "mel_vocoder"
MEL_STAGES = (*DIT_STAGES, VOCODER_STAGE)
# TensorRT profile limits: one CFM call is at most upstream's chunk (1000 frames for v4) plus the
# lookahead's frames; a vocoder call is at most a whole segment when it is decoded in one go.
MAX_DIT_FRAMES = 1536
MAX_VOCODER_FRAMES = 4096
EXAMPLE_FRAMES = 48  # traced and measured at this length (any length works: the axes are dynamic)


class MethodAsForward(nn.Module):
    """One method of a module (the DiT's ``embed_text``, ``embed_step``, ``velocity``) as a module's
    ``forward``: what the exporter traces."""

    def __init__(self, module: nn.Module, method: str):
        super().__init__()
        self.module, self.method = module, method

    def forward(self, *inputs):
        return getattr(self.module, self.method)(*inputs)


def max_abs_error(data: bytes, reference: nn.Module, inputs: dict[str, torch.Tensor], dtype: torch.dtype) -> float:
    """max |graph(inputs) - reference(inputs)| with the graph on ONNX Runtime's CPU provider and the
    reference in float32: what the graph costs in accuracy (float16 graphs included)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    feed = {name: (t.to(dtype) if t.is_floating_point() else t).numpy() for name, t in inputs.items()}
    (got,) = session.run(None, feed)
    with torch.no_grad():
        want = reference(*inputs.values()).float()
    return float((torch.from_numpy(got).float() - want).abs().max())


def _export(
    model, reference, inputs: dict, outputs: list[str], axes: dict, dtype, method: str = "forward"
) -> tuple[bytes, float]:
    example = tuple(t.to(dtype) if t.is_floating_point() else t for t in inputs.values())
    data = onnx_bytes(MethodAsForward(model, method), example, list(inputs), outputs, axes)
    return data, max_abs_error(data, MethodAsForward(reference, method), inputs, dtype)


def export_dit(estimator: nn.Module, dtype: torch.dtype = torch.float32) -> dict[str, tuple[bytes, dict]]:
    """The three DiT graphs of ``estimator`` (a :class:`sovits.dit.DiT`), traced in ``dtype``."""
    reference = copy.deepcopy(estimator).to("cpu", torch.float32).eval()
    model = copy.deepcopy(estimator).to("cpu", dtype).eval()
    c = reference.config
    g = torch.Generator().manual_seed(0)
    b, n = 1, EXAMPLE_FRAMES
    features = torch.randn(b, n, c.text_dim, generator=g)
    dt = torch.full((b,), 0.125)
    with torch.no_grad():
        text, step = reference.embed_text(features), reference.embed_step(dt)
    frames = {0: "batch", 1: "frames"}
    velocity_inputs = {
        "x": torch.randn(b, n, c.mel_dim, generator=g),
        "cond": torch.randn(b, n, c.mel_dim, generator=g),
        "text": text,
        "t": torch.full((b,), 0.375),
        "step": step,
    }
    graphs = {
        "mel_dit_text": _export(
            model,
            reference,
            {"features": features},
            ["text"],
            {"features": frames, "text": frames},
            dtype,
            "embed_text",
        ),
        "mel_dit_step": _export(
            model,
            reference,
            {"dt": dt},
            ["step"],
            {"dt": {0: "batch"}, "step": {0: "batch"}},
            dtype,
            "embed_step",
        ),
        "mel_dit_velocity": _export(
            model,
            reference,
            velocity_inputs,
            ["v"],
            {"x": frames, "cond": frames, "text": frames, "t": {0: "batch"}, "step": {0: "batch"}, "v": frames},
            dtype,
            "velocity",
        ),
    }
    facts = {"dit_config": dataclasses.asdict(c)}
    return {name: (data, {**facts, "max_abs_error": err}) for name, (data, err) in graphs.items()}


def export_mel_vocoder(
    vocoder: nn.Module, version: str, dtype: torch.dtype = torch.float32
) -> dict[str, tuple[bytes, dict]]:
    """The ``mel_vocoder`` graph of a v3/v4 vocoder (``sovits.mel_vocoders.load_mel_vocoder``).

    BigVGAN (v3) is traced in float32 for either precision: the TorchScript exporter turns its
    snake's in-place float16 arithmetic into float32 Casts that meet float16 convolutions, a graph
    ONNX Runtime refuses. The torch path keeps the vocoders float32 on a CPU too; the manifest's
    input dtype says what the graph takes, and the runtime reads it from there.
    """
    from ..sovits.bigvgan import BigVGAN

    if isinstance(vocoder, BigVGAN):
        dtype = torch.float32
    reference = copy.deepcopy(vocoder).to("cpu", torch.float32).eval()
    model = copy.deepcopy(vocoder).to("cpu", dtype).eval()
    # Log-mels of speech lie in about [-12, 2]; random values there exercise the whole range.
    mel = torch.rand(1, 100, EXAMPLE_FRAMES, generator=torch.Generator().manual_seed(0)) * 14 - 12
    axes = {"mel": {0: "batch", 2: "frames"}, "wav": {0: "batch", 2: "samples"}}
    data, err = _export(model, reference, {"mel": mel}, ["wav"], axes, dtype)
    facts = {
        "model_version": version,
        "sample_rate": vocoder.sample_rate,
        "hop_length": vocoder.hop_length,
        "max_abs_error": err,
    }
    return {VOCODER_STAGE: (data, facts)}


def lora_facts(model: nn.Module, lora_base: Path | None) -> dict:
    """A LoRA fine-tune's graphs depend on its base too, which the manifest's source hash does not
    cover: the base's hash goes in the facts and is compared when the graphs are opened."""
    if not model.version.is_lora or lora_base is None:
        return {"lora_base_sha256": None}
    return {"lora_base_sha256": sha256_of(Path(lora_base))}


def profiles(stage: str, facts: dict) -> tuple[dict, dict, dict]:
    """TensorRT (min, opt, max) shapes of one mel graph's dynamic inputs (batch 1: one segment)."""
    if stage == VOCODER_STAGE:
        return ({"mel": (1, 100, 1)}, {"mel": (1, 100, 200)}, {"mel": (1, 100, MAX_VOCODER_FRAMES)})
    c = facts["dit_config"]
    if stage == "mel_dit_step":
        return ({"dt": (1,)},) * 3

    def at(n: int) -> dict:
        if stage == "mel_dit_text":
            return {"features": (1, n, c["text_dim"])}
        mel, text = (1, n, c["mel_dim"]), (1, n, c["text_dim"])
        return {"x": mel, "cond": mel, "text": text, "t": (1,), "step": (1, c["dim"])}

    return at(1), at(1000), at(MAX_DIT_FRAMES)


def export_mel(paths, out: Path, precision: str, dtype: torch.dtype) -> list[Path]:
    """Write the v3/v4 graphs for ``paths`` (``model_paths.ModelPaths``): the DiT's under the SoVITS
    file's hash, the vocoder's under the vocoder file's (or folder's)."""
    from ..sovits.loader import load_sovits
    from ..sovits.mel_vocoders import load_mel_vocoder
    from .export import write_graph

    model = load_sovits(paths.sovits, expected_version=paths.version, lora_base=paths.sovits_base)
    base = lora_facts(model, paths.sovits_base)
    written = [
        write_graph(data, out, name, precision, paths.sovits, {**facts, **base})
        for name, (data, facts) in export_dit(model.estimator, dtype).items()
    ]
    vocoder = load_mel_vocoder(paths.version, paths.vocoder)
    for name, (data, facts) in export_mel_vocoder(vocoder, paths.version, dtype).items():
        written.append(write_graph(data, out, name, precision, paths.vocoder, facts))
    return written
