"""The v3/v4 graphs (backends/mel_graph.py) behind the objects the torch path uses, so that
``cfm.sample_mel`` and ``mel_synthesis.MelStream`` drive them unchanged:

* :class:`GraphDiT`: ``config``, ``embed_text``, ``embed_step``, ``velocity`` and ``parameters()``
  (one empty tensor of the graphs' dtype: ``sample_mel`` reads its compute dtype from it);
* :class:`GraphMelVocoder`: ``forward(mel) -> wav``, ``sample_rate``, ``hop_length``.

Tensors are bound in place (``iobinding``): a DiT step's x, text and velocity are MBs at T ~ 1000,
and with CUDA they stay on the GPU between steps.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from ..sovits.dit import DiTConfig
from .config import BackendChoice
from .errors import ExportStale
from .iobinding import bind_input, bind_output
from .manifest import Manifest, checked_graph, sha256_of
from .mel_graph import DIT_STAGES, VOCODER_STAGE
from .ort import open_session


def precision_of(choice: BackendChoice) -> str:
    return "float16" if choice.dtype == "float16" else "float32"


def run_bound(session, inputs: dict[str, Tensor], outputs: dict[str, Tensor]) -> None:
    """One run with every input and output bound in place (all contiguous, on one device)."""
    binding = session.io_binding()
    inputs = {name: t.contiguous() for name, t in inputs.items()}  # held until the run: bound by pointer
    for name, t in inputs.items():
        bind_input(binding, name, t)
    for name, t in outputs.items():
        bind_output(binding, name, t)
    if any(t.is_cuda for t in inputs.values()):
        torch.cuda.synchronize()  # the inputs were written on torch's stream; ORT reads on its own
    session.run_with_iobinding(binding)


class _DtypeProbe(nn.Module):
    """An nn.Module (so it takes a torch module's place) whose only parameter is empty and of the
    graphs' dtype: callers read a module's compute dtype from its first parameter."""

    def __init__(self, dtype: torch.dtype, device: torch.device):
        super().__init__()
        self.probe = nn.Parameter(torch.empty(0, dtype=dtype, device=device), requires_grad=False)

    @property
    def dtype(self) -> torch.dtype:
        return self.probe.dtype

    @property
    def device(self) -> torch.device:
        return self.probe.device


class GraphDiT(_DtypeProbe):
    def __init__(self, sessions: dict, manifest: Manifest, dtype: torch.dtype, device: torch.device):
        super().__init__(dtype, device)
        self.sessions = sessions
        self.config = DiTConfig(**manifest.facts["dit_config"])

    def _cast(self, t: Tensor) -> Tensor:
        return t.to(self.device, self.dtype)

    def embed_text(self, features: Tensor) -> Tensor:
        out = torch.empty(*features.shape[:2], self.config.text_dim, dtype=self.dtype, device=self.device)
        run_bound(self.sessions["mel_dit_text"], {"features": self._cast(features)}, {"text": out})
        return out

    def embed_step(self, dt: Tensor) -> Tensor:
        out = torch.empty(dt.shape[0], self.config.dim, dtype=self.dtype, device=self.device)
        run_bound(self.sessions["mel_dit_step"], {"dt": self._cast(dt)}, {"step": out})
        return out

    def velocity(
        self, x: Tensor, cond: Tensor, text: Tensor, t: Tensor, step: Tensor, lengths: Tensor | None = None
    ) -> Tensor:
        if lengths is not None and bool((lengths != x.shape[1]).any()):
            raise ValueError("the exported DiT takes unpadded batches (lengths must all be T)")
        if t.dim() == 0:
            t = t.repeat(x.shape[0])
        inputs = {"x": x, "cond": cond, "text": text, "t": t, "step": step}
        out = torch.empty(x.shape, dtype=self.dtype, device=self.device)
        run_bound(self.sessions["mel_dit_velocity"], {k: self._cast(v) for k, v in inputs.items()}, {"v": out})
        return out


class GraphMelVocoder(_DtypeProbe):
    def __init__(self, session, manifest: Manifest, dtype: torch.dtype, device: torch.device):
        super().__init__(dtype, device)
        self.session = session
        self.sample_rate = manifest.facts["sample_rate"]
        self.hop_length = manifest.facts["hop_length"]
        self.model_version = manifest.facts["model_version"]

    def forward(self, mel: Tensor) -> Tensor:
        out = torch.empty(mel.shape[0], 1, mel.shape[2] * self.hop_length, dtype=self.dtype, device=self.device)
        run_bound(self.session, {"mel": mel.to(self.device, self.dtype)}, {"wav": out})
        return out


def check_lora_base(manifest: Manifest, graph: Path, lora_base: Path | None) -> None:
    """A LoRA fine-tune's graphs hold base + LoRA: refuse them for another base (mel_graph.lora_facts).
    Graphs of a plain model carry no base hash, and the source hash already pins that model."""
    want = manifest.facts.get("lora_base_sha256")
    if want is not None and (lora_base is None or not Path(lora_base).exists() or sha256_of(Path(lora_base)) != want):
        raise ExportStale(f"{graph} is stale: it was exported with another LoRA base than {lora_base}; export it again")


def open_graph_dit(
    choice: BackendChoice,
    source: Path,
    lora_base: Path | None = None,
    threads: int | None = None,
    trt_options: dict | None = None,
) -> GraphDiT:
    precision = precision_of(choice)
    sessions, manifest = {}, None
    for stage in DIT_STAGES:
        path, manifest = checked_graph(choice.onnx_dir, stage, precision, source)
        check_lora_base(manifest, path, lora_base)
        sessions[stage] = open_session(path, choice, threads, (trt_options or {}).get(stage))
    dtype = torch.float16 if precision == "float16" else torch.float32
    return GraphDiT(sessions, manifest, dtype, torch.device(choice.device))


def open_graph_vocoder(
    choice: BackendChoice, source: Path, version: str, threads: int | None = None, trt_options: dict | None = None
) -> GraphMelVocoder:
    precision = precision_of(choice)
    path, manifest = checked_graph(choice.onnx_dir, VOCODER_STAGE, precision, source)
    if manifest.facts.get("model_version") != version:
        raise ExportStale(f"{path} is stale: it holds the {manifest.facts.get('model_version')} vocoder, not {version}")
    session = open_session(path, choice, threads, (trt_options or {}).get(VOCODER_STAGE))
    dtype = torch.float16 if manifest.inputs[0].dtype == "float16" else torch.float32  # v3: float32 (mel_graph)
    return GraphMelVocoder(session, manifest, dtype, torch.device(choice.device))
