"""vocoder node: semantic tokens + target phones + the voice's spectrogram -> audio chunks.

Inputs:  ``semantic_tokens`` (Int64[n] chunks from gpt), ``reference_spectrogram`` (Float32[1025*F]),
         ``speaker_embedding`` (Float32[20480], v2Pro/v2ProPlus).
Output:  ``audio`` (Float32[n] mono, metadata sample_rate + segment keys; the dora-kokoro-tts contract).

Each segment's audio is followed by ``GSV_FRAGMENT_INTERVAL`` seconds of silence (0.3, as upstream)
and leaves in messages of at most ``GSV_MAX_CHUNK_SECONDS`` (1.0) so dora-pyaudio-style sinks that
play one second per message lose nothing. ``GSV_NOISE_SCALE`` (0.5) and ``GSV_SPEED`` (1.0) are
upstream's decode knobs.
"""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from dora_gpt_sovits import messages as m
from dora_gpt_sovits.node_runtime import Outgoing, StageBase, connect, serve

log = logging.getLogger("gsv.vocoder")

# (tokens [n], target phone ids [N], spectrogram [1025, F], speaker embedding or None) -> float32 audio
Synthesize = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None], np.ndarray]


@dataclass
class OpenSegment:
    key: m.SegmentKey
    phone_ids: list[int]
    chunks: list[np.ndarray] = field(default_factory=list)


class VocoderStage(StageBase):
    name = "vocoder"
    primary_inputs = frozenset({m.SEMANTIC_TOKENS})

    def __init__(
        self,
        synthesize: Synthesize,
        sample_rate: int,
        needs_speaker_embedding: bool,
        max_chunk_seconds: float = 1.0,
        fragment_interval: float = 0.3,
        development_model: bool = False,
    ):
        self.synthesize = synthesize
        self.sample_rate = sample_rate
        self.needs_speaker_embedding = needs_speaker_embedding
        self.max_chunk = max(1, int(max_chunk_seconds * sample_rate))
        self.silence = np.zeros(int(fragment_interval * sample_rate), dtype=np.float32)
        self.development_model = development_model
        self.spectrograms: dict[str, np.ndarray] = {}
        self.embeddings: dict[str, np.ndarray] = {}
        self.open: dict[tuple[str, int], OpenSegment] = {}
        self.waiting: dict[str, list[OpenSegment]] = defaultdict(list)

    def handle(self, input_id: str, value: Any, metadata: dict[str, Any]) -> Iterable[Outgoing]:
        if input_id == m.REFERENCE_SPECTROGRAM:
            part = m.ReferencePart.floats_from_event(value, metadata, input_id)
            self.spectrograms[part.voice] = np.array(part.payload)
            yield from self.release(part.voice)
        elif input_id == m.SPEAKER_EMBEDDING:
            part = m.ReferencePart.floats_from_event(value, metadata, input_id)
            self.embeddings[part.voice] = np.array(part.payload)
            yield from self.release(part.voice)
        elif input_id == m.SEMANTIC_TOKENS:
            chunk = m.SemanticChunk.from_event(value, metadata)
            yield from self.add_chunk(chunk)

    def add_chunk(self, chunk: m.SemanticChunk) -> Iterator[Outgoing]:
        ident = (chunk.key.utterance_id, chunk.key.segment_index)
        segment = self.open.setdefault(ident, OpenSegment(chunk.key, chunk.phone_ids))
        segment.chunks.append(np.array(chunk.tokens))
        if chunk.error:
            del self.open[ident]
            yield self.audio(segment.key, np.zeros(0, np.float32), 0, True, chunk.error)
            return
        if not chunk.segment_final:
            return
        del self.open[ident]
        if self.ready(segment.key.voice):
            yield from self.vocode(segment)
        else:
            self.waiting[segment.key.voice].append(segment)

    def ready(self, voice: str) -> bool:
        return voice in self.spectrograms and (not self.needs_speaker_embedding or voice in self.embeddings)

    def release(self, voice: str) -> Iterator[Outgoing]:
        if self.ready(voice):
            for segment in self.waiting.pop(voice, []):
                yield from self.vocode(segment)

    def pending(self) -> bool:
        return any(self.waiting.values())

    def finish(self) -> Iterable[Outgoing]:
        stranded = [s for segments in self.waiting.values() for s in segments] + list(self.open.values())
        for segment in stranded:
            reason = "the voice's reference spectrogram never arrived" if segment.key.voice not in self.spectrograms else "the GPT stopped before finishing this segment"
            yield self.audio(segment.key, np.zeros(0, np.float32), 0, True, reason)
        self.waiting.clear()
        self.open.clear()

    def vocode(self, segment: OpenSegment) -> Iterator[Outgoing]:
        tokens = np.concatenate(segment.chunks) if segment.chunks else np.zeros(0, np.int64)
        if len(tokens) == 0:
            yield self.audio(segment.key, np.zeros(0, np.float32), 0, True, "the GPT produced no semantic tokens")
            return
        started = time.perf_counter()
        try:
            wav = self.synthesize(
                tokens,
                np.asarray(segment.phone_ids, dtype=np.int64),
                self.spectrograms[segment.key.voice],
                self.embeddings.get(segment.key.voice),
            )
        except Exception as e:
            log.exception("utterance %s segment %d: vocoding failed", segment.key.utterance_id, segment.key.segment_index)
            yield self.audio(segment.key, np.zeros(0, np.float32), 0, True, f"vocoding failed: {e}")
            return
        elapsed = time.perf_counter() - started
        log.info(
            "utterance %s segment %d: %.2f s of audio in %.2f s (RTF %.3f)",
            segment.key.utterance_id,
            segment.key.segment_index,
            len(wav) / self.sample_rate,
            elapsed,
            elapsed / max(1e-9, len(wav) / self.sample_rate),
        )
        wav = np.concatenate([np.asarray(wav, dtype=np.float32), self.silence])
        starts = range(0, len(wav), self.max_chunk)
        for index, start in enumerate(starts):
            yield self.audio(segment.key, wav[start : start + self.max_chunk], index, index == len(starts) - 1)

    def audio(self, key: m.SegmentKey, samples: np.ndarray, index: int, final: bool, error: str = "") -> Outgoing:
        chunk = m.AudioChunk(key, samples, self.sample_rate, index, final, self.development_model, error)
        return Outgoing(m.AUDIO, *chunk.to_message())


def main() -> None:
    import torch
    from dora_gpt_sovits.node_runtime import configure_threads
    from dora_gpt_sovits.runtime_config import device_and_dtype, load_or_exit
    from dora_gpt_sovits.sovits.loader import load_sovits

    env = dict(os.environ)
    configure_threads()
    device, dtype = device_and_dtype()
    paths = load_or_exit(need=("sovits",))
    model = load_sovits(paths.sovits, device=device, dtype=dtype)
    noise_scale = float(env.get("GSV_NOISE_SCALE", 0.5))
    speed = float(env.get("GSV_SPEED", 1.0))

    @torch.inference_mode()
    def synthesize(tokens: np.ndarray, phones: np.ndarray, spec: np.ndarray, sv: np.ndarray | None) -> np.ndarray:
        wav = model.decode(
            torch.from_numpy(tokens).to(device)[None, None],
            torch.from_numpy(phones).to(device)[None],
            [torch.from_numpy(spec).to(device, dtype)[None]],
            noise_scale=noise_scale,
            speed=speed,
            sv_emb=None if sv is None else [torch.from_numpy(sv).to(device, dtype)[None]],
        )
        return wav[0, 0].float().cpu().numpy()

    stage = VocoderStage(
        synthesize,
        sample_rate=model.config.sampling_rate,
        needs_speaker_embedding=model.version.model_version in ("v2Pro", "v2ProPlus"),
        max_chunk_seconds=float(env.get("GSV_MAX_CHUNK_SECONDS", 1.0)),
        fragment_interval=float(env.get("GSV_FRAGMENT_INTERVAL", 0.3)),
        development_model=paths.development,
    )
    node = connect()
    log.info("SoVITS %s loaded from %s on %s/%s", model.version.model_version, paths.sovits, device, dtype)
    serve(node, stage)


if __name__ == "__main__":
    main()
