"""``sovits.streaming.StreamingSynthesis`` over the exported SoVITS graphs (ONNX Runtime CPU/CUDA/TensorRT)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..sovits.synthesizer import Conditioning
from .config import BackendChoice
from .manifest import checked_graph
from .ort import open_session

STAGES = ("sovits_condition", "sovits_content", "sovits_window")


class GraphStreamingSynthesis:
    """Runs the three SoVITS graphs; tensors cross as numpy (small per chunk: tokens, content, audio)."""

    def __init__(self, sessions: dict, facts: dict, dtype: np.dtype):
        self.sessions = sessions
        self.device = torch.device("cpu")  # where decode_chunk keeps its small index tensors
        self.receptive_field = facts["receptive_field"]
        self.samples_per_frame = facts["samples_per_frame"]
        self.inter_channels = facts["inter_channels"]
        self.sampling_rate = facts["sampling_rate"]
        self.is_pro = facts["is_pro"]
        self.model_version = facts["model_version"]
        self.np_dtype = dtype

    @classmethod
    def open(
        cls, choice: BackendChoice, source: Path | None, threads: int | None = None, trt_options=None
    ) -> GraphStreamingSynthesis:
        precision = "float16" if choice.dtype == "float16" else "float32"
        sessions, facts = {}, {}
        for stage in STAGES:
            path, manifest = checked_graph(choice.onnx_dir, stage, precision, source)
            sessions[stage] = open_session(path, choice, threads, (trt_options or {}).get(stage))
            facts = manifest.facts
        return cls(sessions, facts, np.float16 if precision == "float16" else np.float32)

    def _run(self, stage: str, **inputs) -> list[np.ndarray]:
        return self.sessions[stage].run(None, inputs)

    def _float(self, t: Tensor | np.ndarray) -> np.ndarray:
        a = t.detach().cpu().numpy() if isinstance(t, Tensor) else np.asarray(t)
        return np.ascontiguousarray(a, dtype=self.np_dtype)

    def condition(self, spec: np.ndarray, sv: np.ndarray | None) -> Conditioning:
        """Spectrogram [1025, F] (+ Pro: speaker vector [20480]) -> the voice's conditioning."""
        inputs = {"spec": self._float(spec)[None]}
        if self.is_pro:
            if sv is None:
                raise ValueError(f"{self.model_version} needs a speaker-verification embedding")
            inputs["sv"] = self._float(np.asarray(sv).reshape(1, -1))
        ge, ge_text = self._run("sovits_condition", **inputs)
        return Conditioning(torch.from_numpy(ge), torch.from_numpy(ge_text))

    def content(self, codes: Tensor, phone_ids: Tensor, cond: Conditioning) -> Tensor:
        (content,) = self._run(
            "sovits_content",
            codes=codes.cpu().numpy().astype(np.int64),
            phone_ids=phone_ids.cpu().numpy().astype(np.int64),
            ge_text=self._float(cond.ge_text),
        )
        return torch.from_numpy(content)

    def window_audio(
        self, window: Tensor, eps: Tensor | None, noise_scale: float, cond: Conditioning, keep: slice
    ) -> Tensor:
        eps = torch.zeros(1, self.inter_channels, window.shape[-1]) if eps is None else eps
        (wav,) = self._run(
            "sovits_window",
            window=self._float(window),
            eps=self._float(eps),
            noise_scale=np.array(noise_scale, dtype=np.float32),
            ge=self._float(cond.ge),
            keep_start=np.array(keep.start, dtype=np.int64),
            keep_stop=np.array(keep.stop, dtype=np.int64),
        )
        return torch.from_numpy(wav).float()
