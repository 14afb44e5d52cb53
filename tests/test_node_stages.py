"""Each node's stage logic with stand-in models: no daemon, no weights."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from dora_gpt_sovits import messages as m
from dora_gpt_sovits.nodes.audio_sink import AudioSinkStage
from dora_gpt_sovits.nodes.bert_features import BertStage
from dora_gpt_sovits.nodes.gpt_decoder import ChunkPolicy, GPTStage
from dora_gpt_sovits.nodes.reference import ReferenceStage, VoiceFeatures
from dora_gpt_sovits.nodes.text_input import batch_requests, parse_line
from dora_gpt_sovits.nodes.vocoder import VocoderStage
from dora_gpt_sovits.sovits.token_stream import StreamPolicy
from dora_gpt_sovits.voices import Voice

SR = 32000


def key(segment: int = 0, final: bool = True, utt: str = "u1") -> m.SegmentKey:
    return m.SegmentKey(utt, segment, final, "default", 100.0)


def features_message(n_phones: int = 4, n_prompt: int = 1, segment: int = 0, final: bool = True, voice="default"):
    k = key(segment, final)
    k.voice = voice
    return m.PhoneFeatures(
        k, torch.ones(m.FEATURE_DIM, n_phones), list(range(10, 10 + n_phones)), n_prompt
    ).to_message()


def prompt_message(voice: str = "default"):
    return m.ReferencePart(voice, np.array([5, 6, 7], dtype=np.int64)).to_message()


# ---- gpt ------------------------------------------------------------------------------------------
def counting_decoder(n_tokens: int):
    calls = []

    def decode(phone_ids, features, prompt, seed, options):
        calls.append((phone_ids.tolist(), features.shape, prompt.tolist(), seed))
        yield from range(n_tokens)

    return decode, calls


def chunks_of(outgoing):
    return [m.SemanticChunk.from_event(o.data, o.metadata) for o in outgoing if o is not None]


def test_gpt_streams_a_small_first_chunk_then_larger_ones():
    decode, calls = counting_decoder(30)
    stage = GPTStage(decode, ChunkPolicy(first_chunk_tokens=4, chunk_tokens=10, growth=2.0), seed=7)
    list(stage.handle(m.PROMPT_SEMANTIC, *prompt_message()))
    chunks = chunks_of(stage.handle(m.PHONE_FEATURES, *features_message(segment=2)))
    assert [len(c.tokens) for c in chunks] == [4, 8, 10, 8]  # doubling from 4, capped at 10
    assert np.concatenate([c.tokens for c in chunks]).tolist() == list(range(30))
    assert [c.chunk_index for c in chunks] == [0, 1, 2, 3]
    assert [c.segment_final for c in chunks] == [False, False, False, True]
    assert chunks[0].phone_ids == [11, 12, 13]  # target phones only: the prompt phone is dropped
    assert calls[0][2] == [5, 6, 7] and calls[0][3] == 9  # prompt tokens; seed + segment index


def chunk_sizes(policy: ChunkPolicy, n: int = 6) -> list[int]:
    boundaries = list(itertools.islice(policy.boundaries(), n))
    return [b - a for a, b in zip([0] + boundaries, boundaries)]


def test_chunk_policy_grows_geometrically_to_its_cap():
    assert chunk_sizes(ChunkPolicy()) == [8, 12, 18, 27, 40, 40]  # the defaults
    assert chunk_sizes(ChunkPolicy(first_chunk_tokens=10, chunk_tokens=40, growth=2.0)) == [10, 20, 40, 40, 40, 40]
    assert chunk_sizes(ChunkPolicy(first_chunk_tokens=12, chunk_tokens=40, growth=1.0)) == [12] * 6
    assert chunk_sizes(ChunkPolicy(first_chunk_tokens=8, chunk_tokens=8)) == [8] * 6


def test_gpt_waits_for_the_voice_prompt_then_decodes():
    decode, _ = counting_decoder(3)
    stage = GPTStage(decode)
    (ask,) = stage.handle(m.PHONE_FEATURES, *features_message())
    assert ask.output_id == m.VOICE_REQUEST and m.read_text(ask.data) == "default"  # asks once
    assert list(stage.handle(m.PHONE_FEATURES, *features_message(segment=1))) == []
    assert stage.pending()
    chunks = chunks_of(stage.handle(m.PROMPT_SEMANTIC, *prompt_message()))
    assert chunks[-1].tokens.tolist() == [0, 1, 2] and chunks[-1].segment_final and len(chunks) == 2
    assert not stage.pending()


def test_gpt_reports_segments_whose_voice_never_arrives():
    decode, calls = counting_decoder(3)
    stage = GPTStage(decode)
    list(stage.handle(m.PHONE_FEATURES, *features_message(voice="ghost")))
    (chunk,) = chunks_of(stage.finish())
    assert "ghost" in chunk.error and chunk.segment_final and not calls


def test_gpt_turns_a_decoder_crash_into_an_error_chunk():
    def broken(*_):
        yield 1
        raise RuntimeError("boom")

    stage = GPTStage(broken)
    list(stage.handle(m.PROMPT_SEMANTIC, *prompt_message()))
    (chunk,) = chunks_of(stage.handle(m.PHONE_FEATURES, *features_message()))
    assert "boom" in chunk.error and chunk.segment_final


# ---- vocoder --------------------------------------------------------------------------------------
def fake_make_decoder(cond, phone_ids, seed, speed):
    def decode(history, run, lookahead, position):
        return torch.full((len(run) * 640,), 0.25), torch.zeros(0)  # 640 samples per token, as v2

    return decode


def fake_vocoder(**kwargs) -> VocoderStage:
    return VocoderStage(lambda spec, sv: "cond", fake_make_decoder, SR, **kwargs)


def spectrogram_message(voice="default"):
    return m.ReferencePart(voice, np.ones((1025, 8), np.float32)).to_message()


def token_chunk(tokens, index, final, segment=0, utt_final=True, error=""):
    return m.SemanticChunk(
        key(segment, utt_final), np.asarray(tokens, np.int64), index, final, [1, 2], error
    ).to_message()


def audio_of(outgoing):
    return [m.AudioChunk.from_event(o.data, o.metadata) for o in outgoing]


def test_vocoder_streams_audio_before_the_segment_ends_and_closes_it_with_a_pause():
    stage = fake_vocoder(needs_speaker_embedding=False, policy=StreamPolicy(lookahead_tokens=4, min_run_tokens=8))
    list(stage.handle(m.REFERENCE_SPECTROGRAM, *spectrogram_message()))
    early = audio_of(stage.handle(m.SEMANTIC_TOKENS, *token_chunk(range(40), 0, False)))
    assert len(early) == 1 and len(early[0].samples) == 36 * 640  # 4 tokens held back as lookahead
    assert not early[0].segment_final
    late = audio_of(stage.handle(m.SEMANTIC_TOKENS, *token_chunk(range(40, 75), 1, True)))
    chunks = early + late
    total = np.concatenate([c.samples for c in chunks])
    assert len(total) == 75 * 640 + int(0.3 * SR)
    assert all(len(c.samples) <= SR for c in chunks)  # dora-pyaudio plays one second per message
    assert np.all(total[: 75 * 640] == 0.25) and np.all(total[75 * 640 :] == 0)
    assert [c.chunk_index for c in chunks] == [0, 1, 2]
    assert [c.segment_final for c in chunks] == [False, False, True]


def test_vocoder_waits_for_the_voice_and_passes_errors_through():
    stage = fake_vocoder(needs_speaker_embedding=True)
    (ask,) = stage.handle(m.SEMANTIC_TOKENS, *token_chunk([1, 2], 0, True))
    assert ask.output_id == m.VOICE_REQUEST
    assert list(stage.handle(m.REFERENCE_SPECTROGRAM, *spectrogram_message())) == []  # still needs sv
    sv = m.ReferencePart("default", np.zeros(20480, np.float32)).to_message()
    released = audio_of(stage.handle(m.SPEAKER_EMBEDDING, *sv))
    assert released[-1].segment_final and len(np.concatenate([c.samples for c in released])) == 2 * 640 + int(0.3 * SR)
    (err,) = audio_of(stage.handle(m.SEMANTIC_TOKENS, *token_chunk([], 0, True, segment=1, error="bad text")))
    assert err.error == "bad text" and err.segment_final and len(err.samples) == 0


def test_vocoder_reports_unfinished_segments_at_shutdown():
    stage = fake_vocoder(needs_speaker_embedding=False)
    list(stage.handle(m.REFERENCE_SPECTROGRAM, *spectrogram_message()))
    list(stage.handle(m.SEMANTIC_TOKENS, *token_chunk([1, 2], 0, False)))
    (err,) = audio_of(stage.finish())
    assert err.error and err.segment_final


# ---- audio sink -----------------------------------------------------------------------------------
class Clock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


def audio_message(n, index, seg_final, segment=0, utt_final=True, utt="u1", error=""):
    return m.AudioChunk(
        key(segment, utt_final, utt), np.full(n, 0.1, np.float32), SR, index, seg_final, error=error
    ).to_message()


def metrics_of(outgoing):
    return [o for o in outgoing if o.output_id == m.METRICS]


def test_sink_writes_one_wav_per_utterance_and_reports_ttfa(tmp_path: Path):
    clock = Clock(100.4)
    stage = AudioSinkStage("wav", tmp_path / "speech.wav", clock=clock)
    assert metrics_of(stage.handle(m.AUDIO, *audio_message(SR, 0, True, segment=0, utt_final=False))) == []
    clock.t = 101.0
    (metrics,) = metrics_of(stage.handle(m.AUDIO, *audio_message(SR // 2, 0, True, segment=1, utt_final=True)))
    report = json.loads(metrics.data[0].as_py())
    assert report["ttfa_s"] == pytest.approx(0.4)
    assert report["audio_s"] == pytest.approx(1.5)
    assert report["stalls"] == 0 and report["stall_s"] == 0  # 1 s of audio queued, next chunk 0.6 s later
    wav, rate = sf.read(report["wav_path"])
    assert rate == SR and len(wav) == SR + SR // 2
    list(stage.handle(m.AUDIO, *audio_message(100, 0, True, utt="u2")))
    assert [p.name for p in stage.written] == ["speech.wav", "speech-2.wav"]


def test_sink_reports_failed_segments_and_unfinished_utterances(tmp_path: Path):
    stage = AudioSinkStage("null", tmp_path / "x.wav", clock=Clock(100.0))
    list(stage.handle(m.AUDIO, *audio_message(10, 0, True, segment=0, utt_final=False, error="vocoder broke")))
    (metrics,) = metrics_of(stage.finish())
    errors = json.loads(metrics.data[0].as_py())["errors"]
    assert any("vocoder broke" in e for e in errors) and any("stopped before" in e for e in errors)


# ---- reference ------------------------------------------------------------------------------------
def test_reference_sends_the_default_voice_at_start_prompt_text_last_and_caches(tmp_path: Path):
    encoded = []

    def encode(voice: Voice) -> VoiceFeatures:
        encoded.append(voice.name)
        return VoiceFeatures(np.arange(4), np.ones((1025, 3), np.float32), None)

    registry = {
        "default": Voice("default", tmp_path / "a.wav", "你好", "zh"),
        "twin": Voice("twin", tmp_path / "a.wav", "你好", "zh"),
    }
    stage = ReferenceStage(registry, encode, content_hash=lambda v: str(v.ref_audio))
    sent = list(stage.start())
    assert [o.output_id for o in sent] == [m.PROMPT_SEMANTIC, m.REFERENCE_SPECTROGRAM, m.VOICE_PROMPT]
    assert m.read_text(sent[-1].data) == "你好" and sent[-1].metadata[m.VOICE] == "default"
    again = list(stage.handle("voice_request", m.text_array("twin"), {}))
    assert again[-1].metadata[m.VOICE] == "twin"
    assert encoded == ["default"]  # the same audio content is encoded once


def test_reference_answers_an_unknown_voice_with_an_error():
    stage = ReferenceStage({}, lambda v: None, lambda v: "")
    assert list(stage.start()) == []
    (reply,) = stage.handle("voice_request", m.text_array("nobody"), {})
    assert reply.output_id == m.VOICE_PROMPT and "no voice configured" in reply.metadata[m.ERROR]


# ---- bert -----------------------------------------------------------------------------------------
def test_bert_encodes_chinese_runs_zero_fills_others_and_caches_the_prompt():
    calls = []

    def encode(text, word2ph):
        calls.append(text)
        return torch.arange(sum(word2ph), dtype=torch.float32).repeat(m.FEATURE_DIM, 1)

    stage = BertStage(encode)
    segment = m.PhonemeSegment(key(), np.arange(9), 4, ["zh", "zh", "en"], ["你好", "世", "hi"], [4, 2, 3], [2, 2, 2])
    (out,) = stage.handle(m.PHONEMES, *segment.to_message())
    features = m.PhoneFeatures.from_event(out.data, out.metadata)
    assert features.features.shape == (m.FEATURE_DIM, 9)
    assert features.features[0].tolist() == [0, 1, 2, 3, 0, 1, 0, 0, 0]
    list(stage.handle(m.PHONEMES, *segment.to_message()))
    assert calls == ["你好", "世"]  # second segment hit the cache


# ---- text input -----------------------------------------------------------------------------------
def test_text_requests_from_lines_and_files(tmp_path: Path):
    assert parse_line("  ", "auto", "default") is None
    req = parse_line('{"text": "hi", "voice": "v2"}', "auto", "default")
    assert (req.text, req.language, req.voice) == ("hi", "auto", "v2")
    assert (
        parse_line('{"text": "hi", "utterance_id": "mine"}', "auto", "default").to_message()[1][m.UTTERANCE_ID]
        == "mine"
    )
    with pytest.raises(ValueError, match="text"):
        parse_line('{"txt": 1}', "auto", "default")
    lines = tmp_path / "t.txt"
    lines.write_text("one\n\ntwo\n", encoding="utf-8")
    assert [r.text for r in batch_requests({"GSV_TEXT_FILE": str(lines)})] == ["one", "two"]
    data, md = batch_requests({"GSV_TEXT": "x", "GSV_LANGUAGE": "en"})[0].to_message()
    assert m.read_text(data) == "x" and md[m.LANGUAGE] == "en" and md[m.UTTERANCE_ID]


# ---- text frontend (real G2P, no models) -----------------------------------------------------------
from dora_gpt_sovits.nodes.text_frontend import VOICE_REQUEST, TextFrontendStage  # noqa: E402


def voice_prompt_message(text="你好。", voice="default", language="zh", error=None):
    data, md = m.ReferencePart(voice, text, language=language).to_message()
    return data, md | ({m.ERROR: error} if error else {})


def phoneme_segments(outgoing):
    return [m.PhonemeSegment.from_event(o.data, o.metadata) for o in outgoing if o.output_id == m.PHONEMES]


def test_frontend_holds_text_until_the_voice_arrives_then_emits_one_segment_per_sentence():
    stage = TextFrontendStage()
    out = list(stage.handle(m.TEXT, m.text_array("今天天气很好。我们去公园散步吧。Let's go!"), {m.UTTERANCE_ID: "u9"}))
    assert [o.output_id for o in out] == [VOICE_REQUEST] and stage.pending()
    segments = phoneme_segments(stage.handle(m.VOICE_PROMPT, *voice_prompt_message("这是参考。")))
    assert len(segments) >= 2
    assert [s.key.segment_index for s in segments] == list(range(len(segments)))
    assert [s.key.utterance_final for s in segments] == [False] * (len(segments) - 1) + [True]
    assert all(s.key.utterance_id == "u9" for s in segments)
    first = segments[0]
    assert first.n_prompt_phones > 0 and first.run_languages[0] == "zh"  # prompt phones come first
    assert sum(first.run_phone_counts) == len(first.phone_ids)
    assert "en" in segments[-1].run_languages


def test_frontend_reference_free_voice_has_no_prompt_phones():
    stage = TextFrontendStage()
    list(stage.handle(m.VOICE_PROMPT, *voice_prompt_message("")))
    (segment,) = phoneme_segments(stage.handle(m.TEXT, m.text_array("你好，世界。"), {}))
    assert segment.n_prompt_phones == 0 and segment.key.utterance_final


@pytest.mark.parametrize(
    "text, language, expected",
    [
        ("？！。", "zh", "nothing"),
        ("「」、。", "ja", "nothing"),
        ("hello", "xx", "unknown language"),
    ],
)
def test_frontend_turns_unspeakable_requests_into_error_segments(text, language, expected):
    stage = TextFrontendStage()
    list(stage.handle(m.VOICE_PROMPT, *voice_prompt_message()))
    (segment,) = phoneme_segments(stage.handle(m.TEXT, m.text_array(text), {m.LANGUAGE: language}))
    assert expected in segment.error and segment.key.utterance_final and len(segment.phone_ids) == 0


def test_frontend_reports_text_whose_voice_failed_or_never_came():
    stage = TextFrontendStage()
    list(stage.handle(m.TEXT, m.text_array("你好。"), {m.VOICE: "bad"}))
    (segment,) = phoneme_segments(
        stage.handle(m.VOICE_PROMPT, *voice_prompt_message(voice="bad", error="file missing"))
    )
    assert segment.error == "file missing"
    list(stage.handle(m.TEXT, m.text_array("你好。"), {m.VOICE: "ghost"}))
    (segment,) = phoneme_segments(stage.finish())
    assert "ghost" in segment.error


def test_vocoder_resamples_to_the_output_rate_across_chunks_without_seams():
    def sine_decoder(cond, phone_ids, seed, speed):
        def decode(history, run, lookahead, position):
            t = (np.arange(len(run) * 640) + position * 640) / SR
            return torch.from_numpy(0.5 * np.sin(2 * np.pi * 440 * t).astype(np.float32)), torch.zeros(0)

        return decode

    stage = VocoderStage(
        lambda spec, sv: "cond",
        sine_decoder,
        SR,
        needs_speaker_embedding=False,
        policy=StreamPolicy(lookahead_tokens=0, min_run_tokens=1),
        fragment_interval=0.0,
        output_rate=24000,
    )
    list(stage.handle(m.REFERENCE_SPECTROGRAM, *spectrogram_message()))
    out = []
    for i, final in enumerate([False, False, True]):
        out += audio_of(stage.handle(m.SEMANTIC_TOKENS, *token_chunk(range(i * 13, (i + 1) * 13), i, final)))
    wav = np.concatenate([c.samples for c in out])
    assert all(c.sample_rate == 24000 for c in out)
    assert abs(len(wav) - 39 * 640 * 24000 / SR) <= 2
    # A continuous 440 Hz tone stays one: compare with an ideal one away from the utterance edges.
    t = np.arange(len(wav)) / 24000
    ideal = 0.5 * np.sin(2 * np.pi * 440 * t)
    assert np.max(np.abs(wav[500:-500] - ideal[500:-500])) < 1e-2


def test_request_options_ride_from_the_text_to_the_gpt_and_the_vocoder():
    options = m.RequestOptions(top_k=5, top_p=0.8, temperature=0.7, speed=1.25)
    frontend = TextFrontendStage()
    list(frontend.handle(m.VOICE_PROMPT, *voice_prompt_message("")))
    (segment,) = phoneme_segments(frontend.handle(m.TEXT, m.text_array("你好。"), options.metadata()))
    assert segment.key.options == options
    seen = []

    def decode(phone_ids, features, prompt, seed, request_options):
        seen.append(request_options)
        yield from range(3)

    gpt = GPTStage(decode)
    list(gpt.handle(m.PROMPT_SEMANTIC, *prompt_message()))
    features = m.PhoneFeatures(segment.key, torch.ones(m.FEATURE_DIM, 2), [1, 2], 0).to_message()
    (chunk,) = chunks_of(gpt.handle(m.PHONE_FEATURES, *features))
    assert seen == [options] and chunk.key.options == options
    speeds = []

    def make_decoder(cond, phone_ids, seed, speed):
        speeds.append(speed)
        return fake_make_decoder(cond, phone_ids, seed, speed)

    vocoder = VocoderStage(lambda spec, sv: "cond", make_decoder, SR, needs_speaker_embedding=False)
    list(vocoder.handle(m.REFERENCE_SPECTROGRAM, *spectrogram_message()))
    audio = audio_of(vocoder.handle(m.SEMANTIC_TOKENS, *chunk.to_message()))
    assert speeds == [1.25] and audio[-1].key.options == options
    # Requests without options leave every node on its own defaults.
    assert m.SegmentKey("u", 0, True).metadata().keys().isdisjoint({m.TOP_K, m.TOP_P, m.TEMPERATURE, m.SPEED})


def test_malformed_request_options_are_a_message_error():
    with pytest.raises(m.MessageError, match="request option"):
        m.RequestOptions.from_metadata({m.TOP_K: "many"}, m.TEXT)
