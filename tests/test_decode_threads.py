"""GSV_DECODE_THREADS (gpt/decode_threads.py): the GPT's decode steps run on fewer torch threads once
every running segment has drawn its first chunk; prefills and first chunks keep all of them, and the
fused step draws the tokens it draws on all threads; a decoder that does not say its results ignore
the thread count keeps its threads — batched (the scheduler) and one segment at a time (the gpt
node's own loop).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import FIXTURES
from test_batching import kernel_or_skip
from test_batching_node import segment
from test_decode_layers import random_model

from dora_gpt_sovits import messages as m
from dora_gpt_sovits.gpt.batching import Job, Scheduler, Token
from dora_gpt_sovits.gpt.decode_layers import FusedDecodeLayers, FusedDecoder
from dora_gpt_sovits.gpt.decode_threads import DecodeThreads, thread_count_invariant
from dora_gpt_sovits.gpt.loader import load_gpt
from dora_gpt_sovits.gpt.module_decoder import ModuleDecoder
from dora_gpt_sovits.gpt.sampling import SamplingParams
from dora_gpt_sovits.gpt.weights import pack_half
from dora_gpt_sovits.nodes.gpt_decoder import ChunkPolicy, GPTStage
from dora_gpt_sovits.settings import GPTSettings

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def two_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


def test_a_step_runs_lean_only_once_every_row_has_its_first_chunk(two_threads):
    lean = DecodeThreads(lean=1, after=8)
    for drawn, inside in (([8, 30], 1), ([30, 7], 2), ([], 2)):
        with lean.step(drawn):
            assert torch.get_num_threads() == inside
        assert torch.get_num_threads() == 2
    for unchanged in (DecodeThreads(), DecodeThreads(lean=2, after=0), DecodeThreads(lean=4, after=0)):
        with unchanged.step([100]):
            assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError), lean.step([9]):
        raise RuntimeError("a failing step")
    assert torch.get_num_threads() == 2  # restored after a failing step too


class Recording:
    """Records the torch threads of every prefill and step of the decoder it wraps."""

    def __init__(self, decoder, joins: bool, invariant: bool = True):
        self.decoder, self.joins_rows, self.calls = decoder, joins, []
        self.thread_count_invariant = invariant  # what the scheduler asks before stepping lean

    def __getattr__(self, name):
        return getattr(self.decoder, name)

    def recorded(self, kind, method):
        def call(*args, **kwargs):
            self.calls.append((kind, torch.get_num_threads()))
            return method(*args, **kwargs)

        return call

    def prefill_row(self, *args, **kwargs):
        return self.recorded("prefill", self.decoder.prefill_row)(*args, **kwargs)

    def step_rows(self, *args, **kwargs):
        return self.recorded("step", self.decoder.step_rows)(*args, **kwargs)

    def prefill(self, *args, **kwargs):
        return self.recorded("prefill", self.decoder.prefill)(*args, **kwargs)

    def step(self, *args, **kwargs):
        return self.recorded("step", self.decoder.step)(*args, **kwargs)


def fixture_jobs(decoder, lengths=(40, 25)) -> list[Job]:
    expected = np.load(FIXTURES / "expected.npz")
    phones, bert, prompt = (
        torch.from_numpy(expected[f"gpt_v2_tiny_{k}"]) for k in ("phone_ids", "bert", "prompt_semantic")
    )
    return [
        Job(i, i, decoder.prepare(phones[:n], bert[:, :n], prompt), SamplingParams(top_k=15, early_stop_num=30, seed=i))
        for i, n in enumerate(lengths)
    ]


@pytest.mark.parametrize("joins", [True, False], ids=["batched rows", "one job at a time"])
def test_the_scheduler_prefills_on_all_threads_and_steps_lean_after_the_first_chunk(two_threads, joins):
    decoder = Recording(ModuleDecoder(load_gpt(FIXTURES / "gpt_v2_tiny.ckpt")), joins)
    scheduler = Scheduler(decoder, max_rows=2, threads=DecodeThreads(lean=1, after=5))
    first, second = fixture_jobs(decoder)
    scheduler.submit(first)
    steps = 0
    while scheduler.busy():
        if steps == 12:
            scheduler.submit(second)  # joins (or follows) a row well past its first chunk
        scheduler.step()
        steps += 1
    assert torch.get_num_threads() == 2
    assert {threads for kind, threads in decoder.calls if kind == "prefill"} == {2}
    threads_of_steps = [threads for kind, threads in decoder.calls if kind == "step"]
    assert threads_of_steps[:4] == [2] * 4  # the first chunk: the prefill drew token 1, steps draw 2-5
    assert threads_of_steps[4] == 1
    # The second job's prefill, and (batched) every step until it too has drawn its first chunk,
    # on all threads again: the lean steps come in two runs.
    runs = [t for i, t in enumerate(threads_of_steps) if i == 0 or threads_of_steps[i - 1] != t]
    assert runs == [2, 1, 2, 1]


def test_a_decoder_that_does_not_say_its_results_ignore_the_thread_count_keeps_its_threads(two_threads):
    """The module path's products go through MKL/oneDNN, whose splitting may follow the thread count."""
    module = ModuleDecoder(load_gpt(FIXTURES / "gpt_v2_tiny.ckpt"))
    assert not thread_count_invariant(module)
    decoder = Recording(module, joins=True, invariant=False)
    scheduler = Scheduler(decoder, max_rows=2, threads=DecodeThreads(lean=1, after=5))
    scheduler.submit(fixture_jobs(decoder)[0])
    while scheduler.busy():
        scheduler.step()
    assert len(decoder.calls) > 10 and {threads for _, threads in decoder.calls} == {2}


def test_the_fused_step_draws_the_same_tokens_on_lean_threads(two_threads):
    """A model wide enough for the products to be split between the two threads."""
    kernel_or_skip()
    g = torch.Generator().manual_seed(0)
    inputs = [(torch.randint(0, 300, (n,), generator=g), torch.randn(1024, n, generator=g)) for n in (9, 23, 14)]

    def tokens(decoder, threads):
        jobs = [
            Job(i, i, decoder.prepare(p, b, None), SamplingParams(top_k=15, early_stop_num=40, seed=i))
            for i, (p, b) in enumerate(inputs)
        ]
        scheduler, drawn = Scheduler(decoder, max_rows=3, threads=threads), {job.key: [] for job in jobs}
        for job in jobs:
            scheduler.submit(job)
        while scheduler.busy():
            for event in scheduler.step():
                if isinstance(event, Token):
                    drawn[event.job.key].append(event.token)
        return drawn

    model = pack_half(random_model(hidden=512, heads=8, layers=2, seed=1))
    decoder = FusedDecoder(model, FusedDecodeLayers.for_model(model))
    assert thread_count_invariant(decoder)
    lean = tokens(decoder, DecodeThreads(lean=1, after=3))
    assert lean == tokens(decoder, DecodeThreads()) and all(len(t) > 10 for t in lean.values())


def test_the_node_decoding_one_segment_at_a_time_steps_lean_after_its_first_chunk(two_threads):
    expected = np.load(FIXTURES / "expected.npz")
    inputs = tuple(expected[f"gpt_v2_tiny_{k}"] for k in ("phone_ids", "bert", "prompt_semantic"))
    seen: list[int] = []

    def decode(phone_ids, features, prompt, seed, options, weights=""):
        for token in range(12):
            seen.append(torch.get_num_threads())  # what the step that draws ``token`` runs on
            yield token

    stage = GPTStage(decode, ChunkPolicy(first_chunk_tokens=4), threads=DecodeThreads(lean=1, after=4))
    stage.prompts["default"] = inputs[2]
    chunks = [out for out in stage.decode_segment(segment(inputs, "a", 0, (0, 30), final=True)) if out is not None]
    assert seen == [2] * 4 + [1] * 8
    assert torch.get_num_threads() == 2
    assert chunks and chunks[-1].metadata[m.SEGMENT_FINAL]


def test_decode_threads_is_a_setting_and_the_cpu_graphs_set_it():
    assert GPTSettings.from_env({}).decode_threads == 0
    assert GPTSettings.from_env({"GSV_DECODE_THREADS": "1"}).decode_threads == 1
    with pytest.raises(ValueError, match="GSV_DECODE_THREADS"):
        GPTSettings.from_env({"GSV_DECODE_THREADS": "-1"})
    for graph in ("dataflow.yml", "dataflows/service.yml", "dataflows/openai-server.yml", "dataflows/fast-cpu.yml"):
        nodes = {node["id"]: node for node in yaml.safe_load((REPO / graph).read_text())["nodes"]}
        assert nodes["gpt"]["env"]["GSV_DECODE_THREADS"] == 1, graph
