"""reference node: a voice's recording -> prompt tokens, reference spectrogram, speaker embedding.

Inputs:  ``voice_request`` (Utf8[1]: a voice name, from text-frontend); ``gpt_voice_request`` and
         ``vocoder_voice_request`` (the same, from a gpt or vocoder that lacks a voice — after dora
         restarted it — answered with just the part that node needs).
Outputs: ``prompt_semantic`` (Int64[P] -> gpt), ``reference_spectrogram`` (Float32[1025*F] -> vocoder),
         ``speaker_embedding`` (Float32[20480] -> vocoder, v2Pro/v2ProPlus only),
         ``voice_prompt`` (Utf8[1]: the prompt text -> text-frontend; sent last, so a voice is complete
         downstream before any text that uses it is released).

The default voice is encoded and sent as soon as the node starts. Encodings are cached by the audio
file's content hash: a voice used twice (or two names for one file) is encoded once. A voice may
name its own GPT/SoVITS weights (voices.yml): their paths travel as metadata ``weights`` on
``prompt_semantic`` / ``reference_spectrogram`` so gpt and vocoder load them (``model_cache``); a
voice defined by a request (``ref_audio`` ... in the voice request's metadata) joins the registry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from dora_gpt_sovits import messages as m
from dora_gpt_sovits.encoders.reference_encoder import VoiceFeatures
from dora_gpt_sovits.node_runtime import Outgoing, StageBase
from dora_gpt_sovits.voices import Voice, VoiceError, adhoc_voice, find_voice

log = logging.getLogger("gsv.reference")


class ReferenceStage(StageBase):
    name = "reference"
    primary_inputs = frozenset({"voice_request"})

    def __init__(
        self,
        registry: dict[str, Voice],
        encode: Callable[[Voice], VoiceFeatures],
        content_hash: Callable[[Voice], str],
    ):
        self.registry = registry
        self.encode = encode
        self.content_hash = content_hash
        self.cache: dict[str, VoiceFeatures] = {}
        self.announced: dict[str, Outgoing] = {}  # voice -> its voice_prompt message

    def start(self) -> Iterable[Outgoing]:
        if m.DEFAULT_VOICE in self.registry:
            yield from self.voice_messages(m.DEFAULT_VOICE)

    def handle(self, input_id: str, value: Any, metadata: dict[str, Any]) -> Iterable[Outgoing]:
        name = m.read_text(value, input_id)
        adhoc = adhoc_voice(metadata)
        if adhoc is not None and adhoc.name == name and name not in self.registry:
            self.registry[name] = adhoc  # a request's own voice; encoded once, by content
        if input_id in (m.GPT_VOICE_REQUEST, m.VOCODER_VOICE_REQUEST):
            yield from self.parts_for(input_id, name)
        elif name in self.announced:
            # gpt and vocoder already hold this voice; the frontend asked before our first
            # announcement reached it (or it restarted): its prompt text is all it needs.
            yield self.announced[name]
        else:
            yield from self.voice_messages(name)

    def voice_messages(self, name: str) -> Iterator[Outgoing]:
        try:
            voice, features = self.load(name)
        except (VoiceError, ValueError, OSError) as e:
            # The frontend turns an unusable voice into an error on each waiting utterance.
            log.error("voice %r unusable: %s", name, e)
            yield Outgoing(m.VOICE_PROMPT, m.text_array(""), {m.VOICE: name, m.ERROR: str(e)})
            return
        yield from self.model_parts(name, voice, features, gpt=True, vocoder=True)
        gpt_weights, sovits_weights = str(voice.gpt_weights or ""), str(voice.sovits_weights or "")
        prompt = voice.prompt_text if len(features.prompt_semantic) else ""
        self.announced[name] = Outgoing(
            m.VOICE_PROMPT, *m.ReferencePart(name, prompt, language=voice.prompt_language).to_message()
        )
        yield self.announced[name]
        log.info(
            "voice %r ready: %d prompt tokens, %d spectrogram frames%s%s",
            name,
            len(features.prompt_semantic),
            features.spectrogram.shape[-1],
            ", speaker embedding" if features.speaker_embedding is not None else "",
            "".join(f", {k} {Path(v).name}" for k, v in (("GPT", gpt_weights), ("SoVITS", sovits_weights)) if v),
        )

    def load(self, name: str) -> tuple[Voice, VoiceFeatures]:
        voice = find_voice(name, self.registry)
        voice.check_files()
        return voice, self.features(voice)

    def model_parts(
        self, name: str, voice: Voice, features: VoiceFeatures, gpt: bool, vocoder: bool
    ) -> Iterator[Outgoing]:
        """The voice's parts for the gpt (prompt tokens) and/or the vocoder (spectrogram, embedding)."""
        gpt_weights, sovits_weights = str(voice.gpt_weights or ""), str(voice.sovits_weights or "")
        if gpt:
            yield Outgoing(
                m.PROMPT_SEMANTIC, *m.ReferencePart(name, features.prompt_semantic, weights=gpt_weights).to_message()
            )
        if vocoder:
            yield Outgoing(
                m.REFERENCE_SPECTROGRAM,
                *m.ReferencePart(name, features.spectrogram, weights=sovits_weights).to_message(),
            )
            if features.speaker_embedding is not None:
                yield Outgoing(
                    m.SPEAKER_EMBEDDING,
                    *m.ReferencePart(name, features.speaker_embedding, weights=sovits_weights).to_message(),
                )
            if features.reference_mel is not None:  # v3/v4: the vocoder also needs the prompt tokens
                yield Outgoing(m.REFERENCE_MEL, *m.ReferencePart(name, features.reference_mel).to_message())
                if not gpt:  # else already sent above, and the vocoder listens to that port too
                    yield Outgoing(m.PROMPT_SEMANTIC, *m.ReferencePart(name, features.prompt_semantic).to_message())

    def parts_for(self, input_id: str, name: str) -> Iterator[Outgoing]:
        """What a gpt or vocoder that lacks a voice (dora restarted it) asks for, or why it can't have it."""
        gpt = input_id == m.GPT_VOICE_REQUEST
        try:
            voice, features = self.load(name)
        except (VoiceError, ValueError, OSError) as e:
            log.error("voice %r unusable: %s", name, e)
            port, payload = (m.PROMPT_SEMANTIC, "int64") if gpt else (m.REFERENCE_SPECTROGRAM, "float32")
            yield Outgoing(port, m.empty_array(payload), {m.VOICE: name, m.ERROR: str(e), m.SHAPE: [0]})
            return
        yield from self.model_parts(name, voice, features, gpt=gpt, vocoder=not gpt)
        log.info("voice %r sent again to the %s", name, "gpt" if gpt else "vocoder")

    def features(self, voice: Voice) -> VoiceFeatures:
        # The prompt tokens come from the voice's SoVITS quantizer: its weights are part of the key.
        key = f"{self.content_hash(voice)}:{bool(voice.prompt_text.strip())}:{voice.sovits_weights or ''}"
        if key not in self.cache:
            self.cache[key] = self.encode(voice)
        return self.cache[key]


def load() -> tuple[ReferenceStage, str]:
    """The stage with its encoders loaded and the default voice encoded (before the node joins the
    graph), and the line saying what was loaded. gsv-tts loads it too."""
    from dora_gpt_sovits.audio.reference_audio import content_hash
    from dora_gpt_sovits.backends.stages import hubert_builders, open_or_exit
    from dora_gpt_sovits.encoders.reference_encoder import ReferenceEncoder, is_pro
    from dora_gpt_sovits.node_runtime import fail
    from dora_gpt_sovits.runtime_config import device_and_dtype, load_model_or_exit, load_or_exit
    from dora_gpt_sovits.settings import ReferenceSettings, from_env_or_exit
    from dora_gpt_sovits.sovits.loader import load_sovits
    from dora_gpt_sovits.voices import load_registry

    settings = from_env_or_exit(ReferenceSettings)
    device, dtype = device_and_dtype(settings)
    paths = load_or_exit(need=("sovits", "hubert"))
    sovits = load_model_or_exit(
        load_sovits,
        paths.sovits,
        device=device,
        dtype=dtype,
        expected_version=paths.version,
        lora_base=paths.sovits_base,
    )
    if sovits.version.is_flow_matching:  # v3/v4: only the codebook is used here (prompt tokens)
        sovits.keep_prompt_encoder_only()
    # The SoVITS part used here (a projection and the codebook) is small: always torch. HuBERT is the
    # heavy encoder and follows GSV_BACKEND.
    hubert, choice = open_or_exit("hubert", hubert_builders, paths.hubert, paths.model_dir)
    if is_pro(sovits):
        paths = load_or_exit(need=("sovits", "hubert", "sv"))
    encoder = ReferenceEncoder.load(hubert, sovits, paths.sovits, paths.sv, device, dtype, settings.max_models)
    try:
        registry = load_registry(model_dir=paths.model_dir)
    except VoiceError as e:
        fail(str(e))
    stage = ReferenceStage(registry, encoder.encode, lambda voice: content_hash(voice.ref_audio))
    if m.DEFAULT_VOICE in registry:
        # Encode the default voice before joining, so the first text does not wait for it.
        try:
            stage.features(registry[m.DEFAULT_VOICE])
        except (ValueError, OSError) as e:
            log.warning("default voice unusable: %s", e)  # start() reports it to the frontend
    loaded = (
        f"reference encoders loaded (SoVITS {sovits.version.model_version}, CN-HuBERT on {choice.label}"
        f"{', speaker verification' if encoder.sv_model else ''}); voices: {sorted(registry)}"
    )
    return stage, loaded


def main() -> None:
    from dora_gpt_sovits.node_runtime import serve_model_node

    serve_model_node(load, log)


if __name__ == "__main__":
    main()
