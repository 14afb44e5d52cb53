"""Exported BERT and CN-HuBERT graphs against torch, through the same feature code.

Tolerance 1e-4 absolute (float32; ONNX Runtime's fused attention/GELU/LayerNorm kernels reorder
sums: ~1e-6 measured on these tiny models, whose hidden states are of order 1)."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import FIXTURES
from roberta_fixture import tiny_roberta_dir  # noqa: F401  (fixture)

from dora_gpt_sovits.backends.config import BackendChoice
from dora_gpt_sovits.backends.encoder_graph import export_bert, export_hubert
from dora_gpt_sovits.backends.encoder_runtime import GraphBert, GraphHubert
from dora_gpt_sovits.backends.export import write_graph
from dora_gpt_sovits.encoders.bert import bert_features, load_bert
from dora_gpt_sovits.encoders.hubert import hubert_features, load_hubert

pytestmark = pytest.mark.usefixtures("torch_single_thread")
ATOL = 1e-4


def exported(tmp_path, stage_graphs, source):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, (data, facts) in stage_graphs.items():
            write_graph(data, tmp_path, name, "float32", source, facts)
    return BackendChoice("onnxruntime", "cpu", "float32", tmp_path)


def test_bert_features_match_torch(tiny_roberta_dir, tmp_path):
    model, tokenizer = load_bert(tiny_roberta_dir)
    choice = exported(tmp_path, export_bert(model), tiny_roberta_dir)
    graph = GraphBert.open(choice, tiny_roberta_dir, threads=1)
    for text, word2ph in (("你好", [2, 2]), ("今天天气真好", [2, 2, 2, 2, 2, 1])):
        expected = bert_features(model, tokenizer, text, word2ph)
        got = bert_features(graph, tokenizer, text, word2ph)
        assert got.shape == expected.shape and (got - expected).abs().max() < ATOL


@pytest.mark.skipif(not (FIXTURES / "hubert_tiny").is_dir(), reason="upstream-v2 fixtures not present")
def test_hubert_features_match_torch(tmp_path):
    source = FIXTURES / "hubert_tiny"
    model = load_hubert(source)
    graph = GraphHubert.open(exported(tmp_path, export_hubert(model), source), source, threads=1)
    for seconds in (0.5, 1.3):
        wav = torch.sin(torch.arange(int(16000 * seconds)) * 0.05) * 0.3
        expected, got = hubert_features(model, wav), hubert_features(graph, wav)
        assert got.shape == expected.shape and (got - expected).abs().max() < ATOL
