"""BERT per-phone features with the tiny random chinese-roberta stand-in."""

import pytest
import torch
from roberta_fixture import tiny_roberta_dir  # noqa: F401  (fixture)

from dora_gpt_sovits.devmodels.roberta import build_vocab
from dora_gpt_sovits.encoders.bert import (
    FEATURE_DIM,
    BertModelFiles,
    bert_features,
    bert_features_batch,
    expand_to_phones,
    load_bert,
    phone_features,
    segment_features,
)
from dora_gpt_sovits.text.frontend import text_to_phones


@pytest.fixture(scope="module")
def bert(tiny_roberta_dir):
    return load_bert(tiny_roberta_dir, "cpu", torch.float32)


def test_dev_model_directory_is_in_the_official_format(tiny_roberta_dir):
    names = {p.name for p in tiny_roberta_dir.iterdir()}
    assert {"config.json", "vocab.txt", "pytorch_model.bin", "tokenizer_config.json"} <= names
    assert len(build_vocab(21128)) == 21128 and build_vocab(21128)[:1] == ["[PAD]"]
    assert build_vocab(21128)[100:104] == ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def test_missing_directory_and_files(tmp_path):
    with pytest.raises(BertModelFiles, match="not found"):
        load_bert(tmp_path / "nope")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(BertModelFiles, match="pytorch_model.bin or model.safetensors.*vocab.txt"):
        load_bert(tmp_path)


def test_feature_shape_and_word2ph_repetition(bert):
    model, tokenizer = bert
    norm_text, word2ph = "你好,世界.", [2, 2, 1, 2, 2, 1]
    feats = bert_features(model, tokenizer, norm_text, word2ph)
    assert feats.shape == (FEATURE_DIM, sum(word2ph)) and feats.dtype == torch.float32
    # columns of one character are identical; different characters differ
    assert torch.equal(feats[:, 0], feats[:, 1]) and torch.equal(feats[:, 5], feats[:, 6])
    assert not torch.equal(feats[:, 1], feats[:, 2])


def test_third_from_last_hidden_state(bert):
    model, tokenizer = bert
    inputs = tokenizer("你好", return_tensors="pt")
    with torch.no_grad():
        hidden = model(**inputs, output_hidden_states=True).hidden_states
    expected = hidden[-3][0, 1:-1]
    assert torch.allclose(bert_features(model, tokenizer, "你好", [1, 1]).T, expected, atol=1e-5)


def test_batched_matches_single(bert):
    model, tokenizer = bert
    texts, word2phs = ["你好.", "今天天气很好,我们去公园."], [[2, 2, 1], [2] * 6 + [1] + [2] * 5 + [1]]
    batched = bert_features_batch(model, tokenizer, texts, word2phs)
    for text, w2p, feats in zip(texts, word2phs, batched):
        assert torch.allclose(feats, bert_features(model, tokenizer, text, w2p), atol=1e-4)


def test_misaligned_word2ph_is_rejected(bert):
    model, tokenizer = bert
    with pytest.raises(ValueError, match="word2ph"):
        bert_features(model, tokenizer, "你好", [2])


def test_segments_get_bert_or_zeros(bert):
    model, tokenizer = bert
    segments = text_to_phones("我喜欢Python编程。", "zh")
    per_segment = segment_features(model, tokenizer, segments)
    assert [f.shape[1] for f in per_segment] == [len(s.phones) for s in segments]
    assert torch.count_nonzero(per_segment[1]) == 0 and torch.count_nonzero(per_segment[0]) > 0
    joined = phone_features(model, tokenizer, segments)
    assert joined.shape == (FEATURE_DIM, sum(len(s.phones) for s in segments))


def test_expand_to_phones():
    rows = torch.arange(6.0).reshape(3, 2)
    assert expand_to_phones(rows, [1, 2, 0]).tolist() == [[0.0, 2.0, 2.0], [1.0, 3.0, 3.0]]


def test_a_run_over_510_characters_is_encoded_in_windows_not_a_crash(bert):
    # The frontend keeps runs within 510 characters; a longer one from elsewhere must not take the
    # bert node (and every request in flight) down: the model itself has only 512 positions.
    model, tokenizer = bert
    text = "今天天气很好我们去公园散步吧" * 44  # 616 characters
    word2ph = [2] * len(text)
    with pytest.raises((IndexError, RuntimeError)):  # positions past the model's 512
        model(**tokenizer(text, return_tensors="pt"))
    feats = bert_features(model, tokenizer, text, word2ph)
    assert feats.shape == (FEATURE_DIM, 2 * len(text))
    head = bert_features(model, tokenizer, text[:510], word2ph[:510])
    tail = bert_features(model, tokenizer, text[510:], word2ph[510:])
    assert torch.equal(feats, torch.cat([head, tail], dim=1))
    (batched,) = bert_features_batch(model, tokenizer, [text], [word2ph])
    assert torch.equal(batched, feats)


def test_prepacked_products_give_the_same_features_and_free_the_weights(bert, tiny_roberta_dir):
    """`pack_products` (on by default in the bert node on AMD CPUs, where oneDNN's float32 products
    are 2-3x MKL's at a segment's rows) computes the same features to float32 summation order."""
    from torch import nn

    from dora_gpt_sovits.onednn_linear import PackedLinearModule

    packed_model, tokenizer = load_bert(tiny_roberta_dir, "cpu", torch.float32, pack_products=True)
    encoder = packed_model.bert.encoder
    assert not any(type(m) is nn.Linear for m in encoder.modules())
    assert sum(isinstance(m, PackedLinearModule) for m in encoder.modules()) == 6 * len(encoder.layer)
    norm_text, word2ph = "今天天气真好,我们去公园散步吧.", [2] * 15 + [1]
    got = bert_features(packed_model, tokenizer, norm_text, word2ph)
    want = bert_features(bert.model, bert.tokenizer, norm_text, word2ph)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=0)
    texts, word2phs = ["你好,世界.", norm_text], [[2, 2, 1, 2, 2, 1], word2ph]  # a padded batch
    for got_row, want_row in zip(
        bert_features_batch(packed_model, tokenizer, texts, word2phs), bert_features_batch(*bert, texts, word2phs)
    ):
        torch.testing.assert_close(got_row, want_row, atol=2e-5, rtol=0)
    with pytest.raises(ValueError, match="float32 CPU model"):
        load_bert(tiny_roberta_dir, "cpu", torch.bfloat16, pack_products=True)


def test_products_are_packed_where_mkl_is_slow():
    from dora_gpt_sovits.cpu_features import mkl_float32_is_slow

    assert mkl_float32_is_slow("AuthenticAMD") and not mkl_float32_is_slow("GenuineIntel")
    assert not mkl_float32_is_slow("")  # no /proc/cpuinfo: MKL, as PyTorch would
