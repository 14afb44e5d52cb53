"""Property tests of the text paths on arbitrary input: any unicode (lone surrogates, control
characters, emoji, mixed scripts, huge digit runs) either becomes phones/segments within the
models' limits or is refused with FrontendError -- never another exception. The sizes stay small
enough for the whole file to run in well under a minute; tests/test_text_scaling.py covers size."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dora_gpt_sovits.text.errors import FrontendError
from dora_gpt_sovits.text.frontend import text_to_phones
from dora_gpt_sovits.text.llm_stream import TurnSentences
from dora_gpt_sovits.text.segment_limits import MAX_BERT_CHARS, MAX_SEGMENT_PHONES, segment_text
from dora_gpt_sovits.text.sentence_split import METHODS, StreamingSplitter, prepare_sentences

LANGUAGES = ["zh", "all_zh", "en", "auto"]
FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)

any_char = st.characters(blacklist_categories=())  # surrogates (Cs) included
chunks = st.one_of(
    st.text(any_char, max_size=30),
    st.text(st.characters(min_codepoint=0x4E00, max_codepoint=0x9FA5), min_size=1, max_size=40),
    st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ '", min_size=1, max_size=40),
    st.integers(1, 3000).flatmap(lambda n: st.sampled_from("0123456789").map(lambda d: d * n)),
    st.text("0123456789", min_size=1, max_size=60),
    st.text("，。？！、；：,.?!~:…—-+×÷=/%$£°℃~() \n\t\r\x00\x07\x1b\u200b", min_size=1, max_size=10),
    st.sampled_from(["km", "cm²", "3.14", "1/2", "-5", "12:30", "2024年1月1日", "1st", "$3.50", "α", "①", "😀"]),
)
texts = st.lists(chunks, max_size=8).map("".join)


def assert_runs_fit(runs) -> None:
    assert sum(len(r) for r in runs) <= MAX_SEGMENT_PHONES
    for r in runs:
        assert r.language in ("zh", "en") and len(r.phones) == len(r.phone_ids) > 0
        if r.language == "zh":
            assert len(r.norm_text) <= MAX_BERT_CHARS and len(r.word2ph) == len(r.norm_text)
            assert sum(r.word2ph) == len(r.phones)


@FUZZ
@given(texts, st.sampled_from(LANGUAGES))
def test_text_to_phones_gives_phones_or_a_frontend_error(text, language):
    try:
        runs = text_to_phones(text, language)
    except FrontendError:
        return
    assert runs and all(len(r.phones) == len(r.phone_ids) > 0 for r in runs)


@FUZZ
@given(texts, st.sampled_from(LANGUAGES), st.sampled_from(sorted(METHODS)))
def test_every_segment_fits_the_models_or_carries_an_error(text, language, method):
    segments = list(segment_text(text, language, method=method))
    assert segments and segments[-1].final and sum(s.final for s in segments) == 1
    for s in segments:
        if s.error is None:
            assert_runs_fit(s.runs)
        else:
            assert isinstance(s.error, str) and s.error and not s.runs


@FUZZ
@given(texts, st.sampled_from(["zh", "en"]), st.sampled_from(sorted(METHODS)))
def test_prepared_sentences_fit_bert(text, language, method):
    for piece in prepare_sentences(text, language, method):
        assert 0 < len(piece) <= MAX_BERT_CHARS


@FUZZ
@given(
    st.lists(st.one_of(chunks, st.sampled_from(["<tool_call>", "</tool_call>", "<tool", "_call>"])), max_size=12),
    st.integers(1, 9),
)
def test_the_stream_splitters_take_any_deltas(deltas, step):
    text = "".join(deltas)
    splitter, out = StreamingSplitter(max_chars=80), []
    for i in range(0, len(text), step):
        out += splitter.push(text[i : i + step])
    out += splitter.flush()
    assert all(0 < len(s) <= 80 + 256 for s in out)
    alnum = [c for c in text if c.isalnum()]
    assert [c for s in out for c in s if c.isalnum()] == alnum  # nothing lost, nothing reordered
    turn = TurnSentences()
    sentences = [s for d in deltas for s in turn.push(d)] + turn.end()
    assert all(isinstance(s, str) and s.strip() for s in sentences)
