"""bert node: phone segments -> per-phone BERT features for the GPT.

Input ``phonemes`` (Int64[T]); output ``phone_features`` (Float32[1024*T], shape [1024, T]).
Input ``control`` (stop, from text-frontend): segments of cancelled utterances are dropped.
Chinese runs go through chinese-roberta-wwm-ext-large (third-from-last layer, repeated per
``word2ph``); other languages get zeros, as upstream. Runs are cached by their text, so a voice's
prompt text is encoded once, not once per segment. With ``GSV_FAIR_SCHEDULING=1`` a new
utterance's segment is encoded before the backlog of a long one queued ahead of it (``fair_queue``).
Environment: model paths (see ``dora_gpt_sovits.model_paths``), ``GSV_DEVICE`` (cpu/cuda),
``GSV_DTYPE`` (float32/float16/bfloat16).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import torch

from dora_gpt_sovits import messages as m
from dora_gpt_sovits.cancellation import Cancellations
from dora_gpt_sovits.node_runtime import Outgoing, StageBase

log = logging.getLogger("gsv.bert")

# (norm_text, word2ph) -> features [1024, n_phones] for one Chinese run.
RunEncoder = Callable[[str, list[int]], torch.Tensor]


class BertStage(StageBase):
    probe_output, probe_payload = m.PHONE_FEATURES, "float32"  # health probes pass (shared/health.py)
    name = "bert"
    fair_inputs = frozenset({m.PHONEMES})  # GSV_FAIR_SCHEDULING: a new text's segment overtakes a long backlog

    def __init__(self, encode_chinese_run: RunEncoder, cache_size: int = 64):
        self.encode_chinese_run = encode_chinese_run
        self.cache: OrderedDict[tuple[str, tuple[int, ...]], torch.Tensor] = OrderedDict()
        self.cache_size = cache_size
        self.cancelled = Cancellations()

    def handle(self, input_id: str, value: Any, metadata: dict[str, Any]) -> Iterable[Outgoing]:
        if input_id == m.CONTROL:
            self.cancelled.apply(m.ControlCommand.from_event(value, metadata))
            return
        segment = m.PhonemeSegment.from_event(value, metadata)
        if self.cancelled.cancels(segment.key):
            log.info("utterance %s segment %d: cancelled, dropped", segment.key.utterance_id, segment.key.segment_index)
            return
        if segment.error:
            features = torch.zeros(m.FEATURE_DIM, 0)
        else:
            features = self.features(segment)
        out = m.PhoneFeatures(segment.key, features, segment.phone_ids.tolist(), segment.n_prompt_phones, segment.error)
        yield Outgoing(m.PHONE_FEATURES, *out.to_message())

    def upstream_restarted(self, node: str, inputs: frozenset[str] | None = None) -> Iterable[Outgoing]:
        yield Outgoing(m.PHONE_FEATURES, *m.restart_marker(node, "float32"))

    def features(self, segment: m.PhonemeSegment) -> torch.Tensor:
        columns, word2ph_at = [], 0
        for language, text, n_phones in zip(segment.run_languages, segment.run_texts, segment.run_phone_counts):
            if language == "zh":
                word2ph = segment.word2ph[word2ph_at : word2ph_at + len(text)]
                word2ph_at += len(text)
                if sum(word2ph) != n_phones:
                    raise m.MessageError(f"word2ph of run {text!r} covers {sum(word2ph)} phones, not {n_phones}")
                columns.append(self.chinese_run(text, word2ph))
            else:
                columns.append(torch.zeros(m.FEATURE_DIM, n_phones))
        return torch.cat(columns, dim=1) if columns else torch.zeros(m.FEATURE_DIM, 0)

    def chinese_run(self, text: str, word2ph: list[int]) -> torch.Tensor:
        key = (text, tuple(word2ph))
        if key in self.cache:
            self.cache.move_to_end(key)
            return self.cache[key]
        features = self.encode_chinese_run(text, word2ph).float()
        self.cache[key] = features
        if len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return features


def load() -> tuple[BertStage, str]:
    """The stage with its model loaded and warmed up (before the node joins the graph: dora's ready
    barrier holds the text meanwhile), and the line saying what was loaded. gsv-tts loads it too."""
    from dora_gpt_sovits.backends.stages import bert_builders, open_or_exit
    from dora_gpt_sovits.encoders.bert import bert_features, packed_products
    from dora_gpt_sovits.runtime_config import load_or_exit
    from dora_gpt_sovits.settings import BertSettings, from_env_or_exit

    settings = from_env_or_exit(BertSettings)  # GSV_DEVICE / GSV_DTYPE checked first: one line naming a bad value
    paths = load_or_exit(need=("bert",))
    (model, tokenizer), choice = open_or_exit(
        "bert", lambda source: bert_builders(source, pack_products=settings.pack_products), paths.bert, paths.model_dir
    )  # GSV_BACKEND / GSV_DEVICE / GSV_DTYPE / GSV_BERT_ONEDNN

    @torch.inference_mode()
    def encode(text: str, word2ph: list[int]) -> torch.Tensor:
        return bert_features(model, tokenizer, text, word2ph).cpu()

    encode("你好", [2, 2])  # first forward pass is slow: pay it before serving
    packed = " (products on oneDNN-prepacked weights)" if packed_products(model) else ""
    return BertStage(encode), f"BERT loaded from {paths.bert} on {choice.label}{packed}"


def main() -> None:
    from dora_gpt_sovits.node_runtime import serve_model_node

    serve_model_node(load, log)


if __name__ == "__main__":
    main()
