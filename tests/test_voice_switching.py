"""Voice switching at run time: named voices with their own weights, ad-hoc voices, model LRU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dora_gpt_sovits import messages as m
from dora_gpt_sovits.model_cache import ModelCache, model_choice
from dora_gpt_sovits.nodes.gpt_decoder import GPTStage
from dora_gpt_sovits.nodes.reference import ReferenceStage, VoiceFeatures
from dora_gpt_sovits.nodes.text_frontend import VOICE_REQUEST, TextFrontendStage
from dora_gpt_sovits.nodes.vocoder import VocoderStage
from dora_gpt_sovits.sovits.token_stream import StreamPolicy
from dora_gpt_sovits.voices import Voice, VoiceError, adhoc_voice, load_registry


def test_model_cache_keeps_the_graph_model_and_a_small_lru_of_voice_models(tmp_path, caplog):
    loaded = []

    def load(path: Path) -> str:
        loaded.append(path.name)
        return f"model:{path.name}"

    cache = ModelCache(load, "default", tmp_path / "base.ckpt", capacity=2, kind="GPT")
    assert cache.get(None) == cache.get("") == cache.get(tmp_path / "base.ckpt") == "default"
    assert cache.get(tmp_path / "a.ckpt") == "model:a.ckpt"
    assert cache.get(tmp_path / "b.ckpt") == "model:b.ckpt"
    assert cache.get(tmp_path / "a.ckpt") == "model:a.ckpt"  # cached, and now the most recent
    cache.get(tmp_path / "c.ckpt")  # evicts b, the least recently used
    assert list(p.name for p in cache.loaded) == ["a.ckpt", "c.ckpt"]
    cache.get(tmp_path / "b.ckpt")
    assert loaded == ["a.ckpt", "b.ckpt", "c.ckpt", "b.ckpt"] and cache.loads == 4
    assert cache.get(None) == "default"  # the graph's model is never evicted
    assert model_choice("") == {} and model_choice("x.ckpt") == {"weights": "x.ckpt"}


def test_model_cache_reports_a_file_that_cannot_load(tmp_path):
    def load(path: Path):
        raise ValueError(f"{path.name}: not a GPT checkpoint")

    with pytest.raises(ValueError, match="not a GPT checkpoint"):
        ModelCache(load, "default", capacity=2).get(tmp_path / "bad.ckpt")


def test_voices_yml_names_per_speaker_weights_relative_to_the_file(tmp_path):
    (tmp_path / "voices.yml").write_text(
        "alice: {ref_audio: a.wav, prompt_text: 你好, gpt_weights: w/alice.ckpt, sovits_weights: w/alice.pth}\n"
        "bob: {ref_audio: b.wav}\n",
        encoding="utf-8",
    )
    registry = load_registry({"GSV_VOICES": str(tmp_path / "voices.yml")})
    assert registry["alice"].gpt_weights == tmp_path / "w/alice.ckpt"
    assert registry["alice"].sovits_weights == tmp_path / "w/alice.pth"
    assert registry["bob"].gpt_weights is None
    with pytest.raises(VoiceError, match="gpt_weights .* does not exist"):
        registry["alice"].check_files()


def test_an_adhoc_voice_is_named_after_its_definition():
    a = adhoc_voice({m.REF_AUDIO: "/x/a.wav", m.PROMPT_TEXT: "你好", m.PROMPT_LANGUAGE: "zh"})
    assert a == adhoc_voice({m.REF_AUDIO: "/x/a.wav", m.PROMPT_TEXT: "你好", m.PROMPT_LANGUAGE: "zh"})
    assert a.name != adhoc_voice({m.REF_AUDIO: "/x/a.wav", m.PROMPT_TEXT: "别的"}).name
    assert adhoc_voice({m.VOICE: "default"}) is None


def test_frontend_asks_for_an_adhoc_voice_and_labels_its_segments_with_it():
    stage = TextFrontendStage()
    md = {m.REF_AUDIO: "/x/a.wav", m.PROMPT_TEXT: "参考。", m.PROMPT_LANGUAGE: "zh"}
    (request,) = stage.handle(m.TEXT, m.text_array("你好。"), dict(md))
    name = adhoc_voice(md).name
    assert request.output_id == VOICE_REQUEST and m.read_text(request.data) == name
    assert request.metadata[m.REF_AUDIO] == "/x/a.wav" and request.metadata[m.PROMPT_TEXT] == "参考。"
    out = list(stage.handle(m.VOICE_PROMPT, *m.ReferencePart(name, "参考。", language="zh").to_message()))
    (segment,) = [m.PhonemeSegment.from_event(o.data, o.metadata) for o in out]
    assert segment.key.voice == name and segment.n_prompt_phones > 0
    # The same definition again: no new request, the voice is known.
    assert [o.output_id for o in stage.handle(m.TEXT, m.text_array("再见。"), dict(md))] == [m.PHONEMES]


def test_reference_encodes_adhoc_voices_once_and_passes_per_voice_weights(tmp_path):
    for name in ("a.wav", "alice.ckpt", "alice.pth"):
        (tmp_path / name).write_bytes(b"x")
    encoded = []

    def encode(voice: Voice) -> VoiceFeatures:
        encoded.append((voice.name, voice.sovits_weights))
        return VoiceFeatures(np.arange(4), np.ones((1025, 3), np.float32), None)

    alice = Voice("alice", tmp_path / "a.wav", "你好", "zh", tmp_path / "alice.ckpt", tmp_path / "alice.pth")
    stage = ReferenceStage({"alice": alice}, encode, content_hash=lambda v: str(v.ref_audio))
    sent = list(stage.handle("voice_request", m.text_array("alice"), {m.VOICE: "alice"}))
    weights = {o.output_id: o.metadata.get(m.WEIGHTS) for o in sent}
    assert weights[m.PROMPT_SEMANTIC] == str(tmp_path / "alice.ckpt")
    assert weights[m.REFERENCE_SPECTROGRAM] == str(tmp_path / "alice.pth")
    md = {m.REF_AUDIO: str(tmp_path / "a.wav"), m.PROMPT_TEXT: "你好", m.PROMPT_LANGUAGE: "zh"}
    name = adhoc_voice(md).name
    sent = list(stage.handle("voice_request", m.text_array(name), md | {m.VOICE: name}))
    assert sent[-1].output_id == m.VOICE_PROMPT and sent[-1].metadata[m.VOICE] == name
    assert m.WEIGHTS not in sent[0].metadata  # an ad-hoc voice uses the graph's models
    # Same audio as alice but alice's tokens came from her own SoVITS: encoded separately.
    assert encoded == [("alice", tmp_path / "alice.pth"), (name, None)]
    list(stage.handle("voice_request", m.text_array(name), md | {m.VOICE: name}))
    assert len(encoded) == 2  # asked again: answered from what was announced


def test_reference_reports_missing_per_voice_weights_as_a_voice_error(tmp_path):
    bad = Voice("bad", tmp_path / "a.wav", "", "zh", tmp_path / "missing.ckpt")
    stage = ReferenceStage({"bad": bad}, lambda v: None, lambda v: "")
    (reply,) = stage.handle("voice_request", m.text_array("bad"), {})
    assert reply.output_id == m.VOICE_PROMPT and "missing.ckpt" in reply.metadata[m.ERROR]


def features_message(voice: str, utt: str):
    key = m.SegmentKey(utt, 0, True, voice, 1.0)
    return m.PhoneFeatures(key, torch.ones(m.FEATURE_DIM, 3), [10, 11, 12], 1).to_message()


def test_gpt_decodes_each_voice_with_its_own_weights():
    calls = []

    def decode(phone_ids, features, prompt, seed, options, **choice):
        calls.append(choice.get("weights"))
        yield from range(3)

    stage = GPTStage(decode)
    list(stage.handle(m.PROMPT_SEMANTIC, *m.ReferencePart("default", np.arange(3)).to_message()))
    list(stage.handle(m.PROMPT_SEMANTIC, *m.ReferencePart("alice", np.arange(3), weights="/w/alice.ckpt").to_message()))
    for voice, utt in (("default", "u1"), ("alice", "u2"), ("default", "u3")):
        list(stage.handle(m.PHONE_FEATURES, *features_message(voice, utt)))
    assert calls == [None, "/w/alice.ckpt", None]


def test_vocoder_conditions_each_voice_with_its_own_weights_and_reports_a_model_that_fails():
    conditions = []

    def condition(spec, sv, **choice):
        if choice.get("weights") == "/w/broken.pth":
            raise ValueError("broken.pth: not a SoVITS checkpoint")
        conditions.append(choice.get("weights"))
        return "cond"

    def make_decoder(cond, phone_ids, seed, speed=None):
        return lambda history, run, lookahead, position: (torch.full((len(run) * 640,), 0.1), torch.zeros(0))

    stage = VocoderStage(
        condition,
        make_decoder,
        32000,
        needs_speaker_embedding=False,
        policy=StreamPolicy(lookahead_tokens=0, min_run_tokens=1),
    )
    spec = np.ones((1025, 4), np.float32)
    for voice, weights in (("default", ""), ("alice", "/w/alice.pth"), ("broken", "/w/broken.pth")):
        list(stage.handle(m.REFERENCE_SPECTROGRAM, *m.ReferencePart(voice, spec, weights=weights).to_message()))
    audio = {}
    for voice in ("default", "alice", "broken"):
        key = m.SegmentKey(voice, 0, True, voice)
        out = []
        for i, final in enumerate([False, True]):
            chunk = m.SemanticChunk(key, np.arange(5), i, final, [1, 2])
            out += [
                m.AudioChunk.from_event(o.data, o.metadata)
                for o in stage.handle(m.SEMANTIC_TOKENS, *chunk.to_message())
            ]
        audio[voice] = out
    assert conditions == [None, "/w/alice.pth"]
    assert all(not c.error for c in audio["alice"]) and audio["alice"][-1].segment_final
    (failed,) = audio["broken"]  # one closing message with the reason, nothing after it
    assert failed.segment_final and "not a SoVITS checkpoint" in failed.error
