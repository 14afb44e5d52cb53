"""The message contract: typed round trips, refusal of malformed payloads, and zero-copy proofs."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from dora_gpt_sovits import messages as m


def key(index: int = 0, final: bool = True) -> m.SegmentKey:
    return m.SegmentKey("u1", index, final, "default", 123.5)


def test_sending_wraps_numpy_and_torch_memory_without_copying():
    samples = np.random.default_rng(0).standard_normal(1_000_000).astype(np.float32)
    before = pa.total_allocated_bytes()
    array = m.arrow_from_numpy(samples)
    # Same address, and Arrow's allocator handed out nothing: the 4 MB payload was not copied.
    assert array.buffers()[1].address == samples.ctypes.data
    assert pa.total_allocated_bytes() == before

    tensor = torch.randn(1024, 300)
    array = m.arrow_from_tensor(tensor)
    assert array.buffers()[1].address == tensor.data_ptr()
    assert len(array) == tensor.numel() and array.type == pa.float32()


def test_receiving_views_the_arrow_buffer_without_copying():
    array = pa.array(np.arange(50_000, dtype=np.float32))
    view = m.numpy_view(array, np.float32, m.AUDIO)
    assert view.ctypes.data == array.buffers()[1].address
    assert not view.flags.writeable  # a view over the sender's shared memory must stay read-only
    tensor = m.tensor_view(view)
    assert tensor.data_ptr() == array.buffers()[1].address


def test_phone_features_round_trip_keeps_shape_and_shares_memory():
    features = torch.randn(m.FEATURE_DIM, 7)
    data, md = m.PhoneFeatures(key(), features, [5, 6, 7, 8, 9, 10, 11], 3).to_message()
    back = m.PhoneFeatures.from_event(data, md)
    assert back.features.shape == (m.FEATURE_DIM, 7)
    assert np.array_equal(back.features, features.numpy())
    assert back.features.ctypes.data == data.buffers()[1].address
    assert back.key == key() and back.n_prompt_phones == 3


def test_semantic_and_audio_round_trip():
    data, md = m.SemanticChunk(key(2, False), np.array([1, 2, 3]), 4, False, [9, 9]).to_message()
    chunk = m.SemanticChunk.from_event(data, md)
    assert chunk.tokens.tolist() == [1, 2, 3] and chunk.chunk_index == 4 and not chunk.segment_final
    assert chunk.key.segment_index == 2 and chunk.phone_ids == [9, 9]

    data, md = m.AudioChunk(key(), np.zeros(320, np.float32), 32000, 0, True).to_message()
    assert data.type == pa.float32() and md[m.SAMPLE_RATE] == 32000  # the dora-kokoro-tts contract
    audio = m.AudioChunk.from_event(data, md)
    assert audio.segment_final and audio.sample_rate == 32000


def test_audio_from_a_kokoro_style_producer_needs_only_sample_rate():
    audio = m.AudioChunk.from_event(pa.array(np.ones(10, np.float32)), {"sample_rate": 24000})
    assert audio.sample_rate == 24000 and audio.key.utterance_id == "external"


@pytest.mark.parametrize(
    "value, expected",
    [
        (pa.array([1, 2, 3]), "expected a Utf8 string array"),
        (pa.array([], type=pa.string()), "empty string array"),
        (pa.array([None], type=pa.string()), "null"),
        ("plain python string", "expected a Utf8 string array"),
    ],
)
def test_text_port_refuses_wrong_types(value, expected):
    with pytest.raises(m.MessageError, match=expected):
        m.read_text(value)


def test_audio_port_refuses_list_arrays_float64_and_missing_sample_rate():
    nested = pa.array([np.zeros(4, np.float32)])
    with pytest.raises(m.MessageError, match="flat float"):
        m.AudioChunk.from_event(nested, {"sample_rate": 32000})
    with pytest.raises(m.MessageError, match="flat float"):
        m.AudioChunk.from_event(pa.array(np.zeros(4)), {"sample_rate": 32000})
    with pytest.raises(m.MessageError, match="missing metadata"):
        m.AudioChunk.from_event(pa.array(np.zeros(4, np.float32)), {})


def test_phone_features_refuse_inconsistent_shapes():
    data, md = m.PhoneFeatures(key(), torch.zeros(m.FEATURE_DIM, 3), [1, 2, 3], 0).to_message()
    with pytest.raises(m.MessageError, match="3 feature columns for 2 phones"):
        m.PhoneFeatures.from_event(data, md | {m.PHONE_IDS: [1, 2]})
    with pytest.raises(m.MessageError, match="does not fit"):
        m.PhoneFeatures.from_event(data, md | {m.SHAPE: [m.FEATURE_DIM, 4]})


def test_phoneme_segment_checks_run_counts():
    seg = m.PhonemeSegment(key(), np.arange(5), 2, ["zh", "en"], ["你", "hi"], [2, 3], [2])
    data, md = seg.to_message()
    assert m.PhonemeSegment.from_event(data, md).run_phone_counts == [2, 3]
    with pytest.raises(m.MessageError, match="sum to 4"):
        m.PhonemeSegment.from_event(data, md | {m.RUN_PHONE_COUNTS: [2, 2]})


def test_metadata_is_flat_dora_compatible():
    _, md = m.PhonemeSegment(key(), np.arange(2), 0, ["en"], ["hi"], [2], []).to_message()
    for value in md.values():
        assert isinstance(value, (bool, int, float, str, list)), value
        if isinstance(value, list):
            assert all(isinstance(v, (int, float, str)) for v in value)
