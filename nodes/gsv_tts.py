"""gsv-tts node: the whole TTS in one process, a drop-in for dora-kokoro-tts.

Input:  ``text`` (Utf8, one string per message: any length, split into sentences inside;
        ``<tool_call>`` blocks removed, empty text skipped, as dora-kokoro-tts);
        ``control`` (optional, not in kokoro graphs: ``stop`` [+ ``utterance_id``], or any non-text
        message such as dora-vad's ``timestamp_start`` = stop everything; docs/messages.md "Barge-in");
        ``segment_complete`` (optional: a sink's acknowledgements, e.g. gsv-audio-sink's, for the
        flow-control window ``GSV_MAX_SEGMENTS_AHEAD``, which needs them and is off by default).
Output: ``audio`` (flat float32, mono, ``sample_rate`` metadata on every message, <= 1 s per
        message, streamed: the first sentence's first words leave while the rest is decoded).

A graph that used dora-kokoro-tts takes this node by changing the node's ``build`` and ``path``
(``build: pip install -e <this repository>``, ``path: gsv-tts``) and, if it renames the node, the
sources that name it. Nothing else: the environment defaults below give kokoro's contract without
an ``env`` block, and the default voice, models and the rest come from the same ``GSV_*`` variables
as the staged graph (README).

Inside are the staged graph's stages (text-frontend, reference, bert, gpt, vocoder: ``nodes/*.py``,
each loaded by its node's own ``load()``), wired as in dataflow.yml and served as one stage
(``stage_graph.StageGraph``): the same messages, cancellation, pacing, limiter and resampling, with
dora's IPC between them replaced by function calls. Use the staged graph instead for a device per
stage, stages on several machines, or the GPT decoding while the vocoder runs on another core
(docs/voice-assistant.md, "One node or the staged graph").
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from dora_gpt_sovits import messages as m
from dora_gpt_sovits.node_runtime import Stage, connect, serve
from dora_gpt_sovits.stage_graph import INPUT, OUTPUT, StageGraph

log = logging.getLogger("gsv.tts")

NAME = "gsv-tts"

# dora-kokoro-tts's audio contract, for a node whose graph sets no env: its 24 kHz; a peak that
# dora-pyaudio's unclipped `x * 70000` int16 cast never wraps (0.468); never more than 2 s ahead of
# real time, so dora-pyaudio's default 10-message drop-oldest queue loses nothing. Set a variable
# to override (an empty value means the setting's own default).
KOKORO_DEFAULTS = {
    "GSV_OUTPUT_SAMPLE_RATE": "24000",
    "GSV_PEAK_LIMIT": "0.45",
    "GSV_MAX_LEAD_SECONDS": "2",
}

# The staged graph's edges between these stages (dataflow.yml; tests/test_gsv_tts.py checks that
# they stay the same), plus the node's own ports.
WIRING: dict[str, dict[str, str]] = {
    "text-frontend": {
        m.TEXT: f"{INPUT}/{m.TEXT}",
        m.VOICE_PROMPT: f"reference/{m.VOICE_PROMPT}",
        m.CONTROL: f"{INPUT}/{m.CONTROL}",
        m.SEGMENT_COMPLETE: f"{INPUT}/{m.SEGMENT_COMPLETE}",
    },
    "reference": {
        m.VOICE_REQUEST: f"text-frontend/{m.VOICE_REQUEST}",
        m.GPT_VOICE_REQUEST: f"gpt/{m.VOICE_REQUEST}",
        m.VOCODER_VOICE_REQUEST: f"vocoder/{m.VOICE_REQUEST}",
    },
    "bert": {m.PHONEMES: f"text-frontend/{m.PHONEMES}", m.CONTROL: f"text-frontend/{m.CONTROL}"},
    "gpt": {
        m.PHONE_FEATURES: f"bert/{m.PHONE_FEATURES}",
        m.PROMPT_SEMANTIC: f"reference/{m.PROMPT_SEMANTIC}",
        m.CONTROL: f"text-frontend/{m.CONTROL}",
    },
    "vocoder": {
        m.SEMANTIC_TOKENS: f"gpt/{m.SEMANTIC_TOKENS}",
        m.REFERENCE_SPECTROGRAM: f"reference/{m.REFERENCE_SPECTROGRAM}",
        m.SPEAKER_EMBEDDING: f"reference/{m.SPEAKER_EMBEDDING}",
        m.REFERENCE_MEL: f"reference/{m.REFERENCE_MEL}",
        m.PROMPT_SEMANTIC: f"reference/{m.PROMPT_SEMANTIC}",
        m.CONTROL: f"text-frontend/{m.CONTROL}",
    },
    OUTPUT: {m.AUDIO: f"vocoder/{m.AUDIO}"},
}
# Every model file any stage loads, checked at once: a missing set is named in one line.
MODEL_PARTS = ("gpt", "sovits", "bert", "hubert", "sv", "vocoder")


# In one process the GPT never decodes beside the vocoder, so a v3/v4 streamed first run takes all
# the node's threads (in the graph, where the GPT's process shares the cores, one is faster:
# docs/performance.md, "v4 first run"; float32 here: 1.72 s on 2 threads, 2.27 s on 1).
ONE_PROCESS_DEFAULTS = {"GSV_FIRST_RUN_THREADS": "0"}


def with_kokoro_defaults(env: Mapping[str, str]) -> dict[str, str]:
    """The variables to add to ``env`` so that the output keeps dora-kokoro-tts's contract, and
    the one-process defaults."""
    defaults = KOKORO_DEFAULTS | ONE_PROCESS_DEFAULTS
    return {name: value for name, value in defaults.items() if name not in env}


def tts_graph(stages: Mapping[str, Stage]) -> StageGraph:
    """The stages (by their node ids in dataflow.yml) wired into one stage with gsv-tts's ports."""
    return StageGraph(NAME, stages, WIRING, primary_inputs=frozenset({m.TEXT}))


def load_stages() -> tuple[dict[str, Stage], list[str]]:
    """Every stage loaded by its own node's ``load()`` (models loaded and warmed up), in pipeline
    order, and what each loaded; the node ends with one line if a model file is missing."""
    from dora_gpt_sovits.nodes import bert_features, gpt_decoder, reference, text_frontend, vocoder
    from dora_gpt_sovits.runtime_config import load_or_exit

    load_or_exit(need=MODEL_PARTS)
    stages: dict[str, Stage] = {"text-frontend": text_frontend.load()}
    loaded = []
    for node, module in (("reference", reference), ("bert", bert_features), ("gpt", gpt_decoder), ("vocoder", vocoder)):
        stages[node], line = module.load()
        loaded.append(line)
    return stages, loaded


def check_window(window: int, node: Any) -> None:
    """A flow-control window without acknowledgements would hold the text after its first segments
    for ever: end with one line instead."""
    from dora_gpt_sovits.node_runtime import fail

    try:
        wired = set((node.node_config() or {}).get("inputs") or {})
    except (AttributeError, RuntimeError, TypeError):
        return  # dora would not say: trust the configuration
    if window and m.SEGMENT_COMPLETE not in wired:
        fail(
            f"GSV_MAX_SEGMENTS_AHEAD={window} needs gsv-tts's segment_complete input wired to a sink's "
            "segment_complete (e.g. gsv-audio-sink's); unset it in a graph whose sink sends none"
        )


def main() -> None:
    from dora_gpt_sovits.node_runtime import configure_threads

    os.environ.update(with_kokoro_defaults(os.environ))  # before any stage reads its settings
    configure_threads()
    stages, loaded = load_stages()
    graph = tts_graph(stages)
    node = connect()
    check_window(stages["text-frontend"].window, node)
    for line in loaded:
        log.info(line)
    log.info("%s ready: text -> audio in one process (%s)", NAME, ", ".join(stages))
    serve(node, graph)


if __name__ == "__main__":
    main()
