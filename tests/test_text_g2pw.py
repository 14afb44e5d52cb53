"""The optional g2pW path, exercised with a tiny stand-in ONNX model of the same interface."""

import json

import numpy as np
import pytest
from roberta_fixture import tiny_roberta_dir  # noqa: F401  (fixture)

from dora_gpt_sovits.text import g2pw
from dora_gpt_sovits.text.frontend import clean_text

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def write_stand_in_g2pw(directory, preferred):
    """A g2pW-format directory whose "model" returns phoneme_mask * fixed label scores."""
    from onnx import TensorProto, helper

    polyphonic = [("行", "ㄏㄤ2"), ("行", "ㄒㄧㄥ2"), ("长", "ㄓㄤ3"), ("长", "ㄔㄤ2")]
    labels = sorted({p for _, p in polyphonic})
    scores = np.array([2.0 if label == preferred else 1.0 for label in labels], np.float32)
    inputs = [
        helper.make_tensor_value_info(name, TensorProto.INT64, ["N", "L"])
        for name in ("input_ids", "token_type_ids", "attention_mask")
    ]
    inputs += [
        helper.make_tensor_value_info("phoneme_mask", TensorProto.FLOAT, ["N", len(labels)]),
        helper.make_tensor_value_info("char_ids", TensorProto.INT64, ["N"]),
        helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["N"]),
    ]
    graph = helper.make_graph(
        [helper.make_node("Mul", ["phoneme_mask", "scores"], ["probs"])],
        "stand_in",
        inputs,
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", len(labels)])],
        [helper.make_tensor("scores", TensorProto.FLOAT, [len(labels)], scores)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(directory / "g2pW.onnx"))
    (directory / "POLYPHONIC_CHARS.txt").write_text("\n".join(f"{c}\t{p}" for c, p in polyphonic), encoding="utf-8")
    (directory / "MONOPHONIC_CHARS.txt").write_text("银\tㄧㄣ2\n", encoding="utf-8")
    (directory / "bopomofo_to_pinyin_wo_tune_dict.json").write_text(
        json.dumps({"ㄏㄤ": "hang", "ㄒㄧㄥ": "xing", "ㄓㄤ": "zhang", "ㄔㄤ": "chang", "ㄧㄣ": "yin"}),
        encoding="utf-8",
    )
    (directory / "config.py").write_text("use_mask = True\nuse_char_phoneme = False\n")
    return directory


@pytest.fixture
def g2pw_env(tmp_path, monkeypatch, tiny_roberta_dir):
    def configure(preferred):
        model_dir = tmp_path / preferred
        model_dir.mkdir()
        write_stand_in_g2pw(model_dir, preferred)
        monkeypatch.setenv(g2pw.ENV_DIR, str(model_dir))
        monkeypatch.setenv(g2pw.ENV_TOKENIZER, str(tiny_roberta_dir))
        return model_dir

    yield configure
    g2pw._load.cache_clear()


def test_model_decides_polyphones(g2pw_env):
    g2pw_env("ㄒㄧㄥ2")
    assert g2pw.predict_sentence("银行,") == ["yin2", "xing2", ","]
    assert clean_text("银行", "zh", "v2").phones[2:4] == ["x", "ing2"]
    assert clean_text("银行", "zh", "v1").phones[2:4] == ["h", "ang2"]  # v1 never uses g2pW
    g2pw_env("ㄏㄤ2")
    assert g2pw.predict_sentence("银行") == ["yin2", "hang2"]


def test_overrides_file_wins(g2pw_env):
    model_dir = g2pw_env("ㄒㄧㄥ2")
    (model_dir / "polyphonic.rep").write_text("银行: ['yin2', 'hang2']\n", encoding="utf-8")
    assert clean_text("银行", "zh", "v2").phones[2:4] == ["h", "ang2"]


def test_unconfigured_means_pypinyin(monkeypatch):
    monkeypatch.delenv(g2pw.ENV_DIR, raising=False)
    g2pw._load.cache_clear()
    assert g2pw.active_model() is None
    assert g2pw.predict_sentence("银行") is None


def test_incomplete_directory_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv(g2pw.ENV_DIR, str(tmp_path))
    g2pw._load.cache_clear()
    with pytest.raises(g2pw.G2pwConfigError, match="POLYPHONIC_CHARS.txt"):
        g2pw.active_model()
    g2pw._load.cache_clear()


def test_tokenize_with_offsets_maps_every_character(tiny_roberta_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_roberta_dir), local_files_only=True)
    tokens, char_token = g2pw.tokenize_with_offsets(tokenizer, "行 ab12长")
    assert char_token[0] == 0 and char_token[1] is None
    assert char_token[-1] == len(tokens) - 1
