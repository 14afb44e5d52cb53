"""Side by side with upstream GPT-SoVITS: its own GPT and SoVITS code on the same files and inputs.

Upstream is never vendored: ``--upstream PATH`` names a checkout, and :mod:`.upstream_worker` runs in
a subprocess with ``PYTHONPATH`` pointing into it, on the same checkpoint files, the same thread
count, the same phone ids, BERT features, prompt tokens and reference spectrogram that our pipeline
built, and the same seeds. Its vocoder decodes *our* tokens, so both vocoders do identical work and
their audio can be compared sample for sample.

v3/v4: upstream's SoVITS side is its ``TTS.py`` (``init_vits_weights``, ``init_vocoder``,
``_get_ref_spec`` on the voice's reference recording, ``using_vocoder_synthesis`` with
``sample_steps``), on the same SoVITS, vocoder and reference files, our prompt tokens and prompt
phones, and the seeds our pipeline draws its flow-matching noise with (``mel_synthesis.upstream_noise``
follows upstream's draws), so its audio is comparable sample for sample here too.

What is not run on upstream's side: its text frontend (it needs g2pW and language-detection models
fetched at run time). Its BERT step is re-enacted in the worker (the same ``transformers`` calls, see
:mod:`.upstream_worker`), so upstream's measured pipeline is BERT + GPT + vocoder: a lower bound of
its end to end, which adds the frontend.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .cases import TextCase
from .inprocess import NOISE_SCALE, CaseRun, Pipeline, token_hash

WORKER = Path(__file__).with_name("upstream_worker.py")
# What upstream's GPT and SoVITS modules import beyond torch (checked at upstream 48b1a01).
MISSING_MODULE_HINT = (
    "upstream's modules need packages of its requirements.txt: torchmetrics<=1.5, lightning-utilities, einops, "
    "x_transformers (+ loguru, einx, frozendict, torch_einops_utils). Pass --upstream-python with an interpreter "
    "that has them, or put them on PYTHONPATH (e.g. `pip install --target DIR ...`)"
)


class UpstreamError(RuntimeError):
    """Upstream's side could not run; the message says why (and the benchmark goes on without it)."""


@dataclass
class UpstreamCaseRun:
    case: str
    prefill_s: list[float]
    decode_s: list[float]
    steps: list[int]
    tokens: list[list[int]]
    vocoder_s: list[float]
    bert_s: list[float]
    samples: list[int]
    sample_rate: int
    peak_rss_mib: float | None
    audio_max_abs_diff: float | None = None  # vs ours on the same tokens, first repeat only
    bert_max_abs_diff: float | None = None  # its BERT features vs ours for the same text

    @property
    def audio_s(self) -> float:
        return sum(self.samples) / self.sample_rate

    def token_hash(self) -> str:
        return token_hash(self.tokens)

    def stage_seconds(self) -> dict[str, float]:
        return {
            "bert": sum(self.bert_s),
            "gpt_prefill": sum(self.prefill_s),
            "gpt_decode": sum(self.decode_s),
            "vocoder": sum(self.vocoder_s),
        }


@dataclass
class UpstreamWorker:
    checkout: Path
    python: str
    workdir: Path
    process: subprocess.Popen | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def start(self) -> None:
        if not (self.checkout / "GPT_SoVITS" / "AR" / "models" / "t2s_model.py").is_file():
            raise UpstreamError(f"{self.checkout} is not a GPT-SoVITS checkout (no GPT_SoVITS/AR/models/t2s_model.py)")
        env = dict(os.environ)
        extra = [str(self.checkout / "GPT_SoVITS"), str(self.checkout)]
        env["PYTHONPATH"] = os.pathsep.join(extra + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        self.log_path = self.workdir / "upstream-worker.log"
        self.log = open(self.log_path, "w", encoding="utf-8")
        self.process = subprocess.Popen(
            [self.python, str(WORKER)],
            cwd=self.checkout,  # upstream resolves some paths (i18n locales) against its root
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        assert self.process is not None and self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.write(json.dumps({"op": op, **args}) + "\n")
            self.process.stdin.flush()
            line = self.process.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            raise UpstreamError(f"upstream worker exited during {op!r}: {self.log_tail()}")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise UpstreamError(f"upstream {op!r} failed: {reply.get('error')}\n{reply.get('trace', '')}")
        return reply

    def log_tail(self, n: int = 2000) -> str:
        self.log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-n:]

    def close(self) -> None:
        if self.process is not None:
            if self.process.stdin:
                self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        if getattr(self, "log", None):
            self.log.close()


class Upstream:
    """Our pipeline's inputs in, upstream's timings and tokens out."""

    def __init__(
        self,
        checkout: Path,
        python: str | None,
        workdir: Path,
        pipeline: Pipeline,
        cases: list[TextCase],
        ref_audio: Path | None = None,
    ):
        """``ref_audio``: the voice's recording (v3/v4: upstream computes its reference spectrogram and
        mel from it itself; default: the registry's "default" voice, the one the benchmark prepares).
        ``sample_steps`` (v3/v4) is the pipeline's, read at each run."""
        self.pipeline = pipeline
        self.ref_audio = ref_audio
        workdir = workdir.resolve()  # the worker runs in the checkout: it is given absolute paths only
        self.worker = UpstreamWorker(checkout.resolve(), python or sys.executable, workdir)
        self.inputs_path = workdir / "upstream-inputs.pt"
        self.audio_path = workdir / "upstream-audio.pt"
        self.compared: set[tuple[str, int | None]] = set()
        self.write_inputs(cases)

    def write_inputs(self, cases: list[TextCase]) -> None:
        voice = self.pipeline.voice
        torch.save(
            {
                "cases": {case.name: self.pipeline.inputs(case) for case in cases},
                "prompt_tokens": None if voice.prompt_tokens is None else voice.prompt_tokens.cpu(),
                "prompt_phones": voice.prompt_ids.cpu(),
                "spectrogram": voice.spectrogram.float().cpu(),
                "sv_emb": None if voice.sv_emb is None else voice.sv_emb.float().cpu(),
            },
            self.inputs_path,
        )

    def start(self) -> dict[str, Any]:
        models = self.pipeline.models
        self.worker.start()
        try:
            self.worker.info = self.load(models)
        except UpstreamError as e:
            if "No module named" in str(e):
                raise UpstreamError(f"{str(e).splitlines()[0]} — {MISSING_MODULE_HINT}") from None
            raise
        return self.worker.info

    def load(self, models) -> dict[str, Any]:  # noqa: ANN001 - inprocess.Models
        extra: dict[str, Any] = {}
        dtype = str(models.dtype).removeprefix("torch.")
        if models.flow_matching:
            if self.ref_audio is None:  # the voice both benchmarks prepare: the registry's "default"
                from ..voices import find_voice, load_registry

                self.ref_audio = find_voice("default", load_registry(model_dir=models.paths.model_dir)).ref_audio
            extra = {
                "vocoder_path": absolute(models.paths.vocoder),
                "sovits_base_path": None if models.paths.sovits_base is None else absolute(models.paths.sovits_base),
                "ref_audio": absolute(self.ref_audio),
                "checkout": str(self.worker.checkout),
            }
            if models.device.type == "cpu":
                dtype = "float32"  # upstream runs half precision on a GPU only (TTS_Config: is_half off on CPU)
        return self.worker.call(
            "load",
            gpt_path=absolute(models.paths.gpt),
            sovits_path=absolute(models.paths.sovits),
            model_version=models.sovits.version.model_version,
            threads=torch.get_num_threads(),
            device=str(models.device),
            dtype=dtype,
            inputs_path=str(self.inputs_path),
            bert_path=absolute(models.paths.bert),
            **extra,
        )

    def run(self, case: TextCase, ours: CaseRun, measured: bool = True) -> UpstreamCaseRun:
        """Upstream on ``case`` with the seeds ``ours`` used; its vocoder decodes ``ours``' tokens.

        The audio of the first measured run of each case is compared with ours sample by sample."""
        seeds = [self.pipeline.seed + i for i in range(len(ours.segments))]
        params = self.pipeline.params
        bert = self.worker.call("bert", case=case.name)
        gpt = self.worker.call(
            "gpt",
            case=case.name,
            seeds=seeds,
            early_stop_num=self.pipeline.tokens_per_segment,
            top_k=params.top_k,
            top_p=params.top_p,
            temperature=params.temperature,
            repetition_penalty=params.repetition_penalty,
        )
        key = (case.name, self.pipeline.sample_steps)
        compare = measured and key not in self.compared
        steps = self.pipeline.sample_steps
        if self.pipeline.models.flow_matching and steps is None:
            from ..sovits.mel_synthesis import DEFAULT_STEPS

            steps = DEFAULT_STEPS[self.pipeline.models.paths.version]
        vocoder = self.worker.call(
            "vocoder",
            case=case.name,
            seeds=seeds,
            noise_scale=NOISE_SCALE,
            sample_steps=steps,
            tokens=[s.tokens for s in ours.segments],
            save_audio=str(self.audio_path) if compare else "",
        )
        run = UpstreamCaseRun(
            case=case.name,
            prefill_s=[s["prefill_s"] for s in gpt["segments"]],
            decode_s=[s["decode_s"] for s in gpt["segments"]],
            steps=[s["steps"] for s in gpt["segments"]],
            tokens=[s["tokens"] for s in gpt["segments"]],
            vocoder_s=[s["vocoder_s"] for s in vocoder["segments"]],
            bert_s=[s["bert_s"] for s in bert["segments"]],
            bert_max_abs_diff=max((s["max_abs_diff"] for s in bert["segments"]), default=None),
            samples=[s["samples"] for s in vocoder["segments"]],
            sample_rate=self.pipeline.models.sample_rate,
            peak_rss_mib=max(filter(None, [gpt.get("peak_rss_mib"), vocoder.get("peak_rss_mib")]), default=None),
        )
        if compare:
            self.compared.add(key)
            run.audio_max_abs_diff = audio_difference(ours, torch.load(self.audio_path, weights_only=True))
        return run

    def close(self) -> None:
        self.worker.close()


def absolute(path: Path) -> str:
    """The worker runs in the checkout (see UpstreamWorker.start): paths relative to ours would break."""
    return str(Path(path).resolve())


def audio_difference(ours: CaseRun, theirs: list[torch.Tensor]) -> float | None:
    """Largest sample difference over segments of equal length (None if no lengths match)."""
    diffs = [
        float((s.audio - t).abs().max())
        for s, t in zip(ours.segments, theirs)
        if s.audio.numel() == t.numel() and t.numel()
    ]
    return max(diffs) if diffs else None
