"""Continuous batching (gpt/batching.py): rows of different utterances join and leave a running
batch, and each draws exactly the tokens it draws alone with the same seed, greedy and sampled.

On the tiny fixture model (head_dim 16) through the module path (float32 and float16 products)
and the fused C++ step, and on a random model of the full-size head width.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import FIXTURES

from dora_gpt_sovits.gpt import half_matvec as hm
from dora_gpt_sovits.gpt.batching import Done, Failed, Job, Scheduler, Token
from dora_gpt_sovits.gpt.decode_layers import FusedDecodeLayers, FusedDecoder
from dora_gpt_sovits.gpt.decoder import stream
from dora_gpt_sovits.gpt.loader import load_gpt
from dora_gpt_sovits.gpt.module_decoder import ModuleDecoder
from dora_gpt_sovits.gpt.sampling import SamplingParams
from dora_gpt_sovits.gpt.static_decode import StaticDecoder
from dora_gpt_sovits.gpt.weights import pack_half

pytestmark = pytest.mark.usefixtures("torch_single_thread")  # tiny models; see conftest


@pytest.fixture(scope="module")
def inputs():
    expected = np.load(FIXTURES / "expected.npz")
    return tuple(torch.from_numpy(expected[f"gpt_v2_tiny_{k}"]) for k in ("phone_ids", "bert", "prompt_semantic"))


def kernel_or_skip():
    built, problem = hm._build()
    if not built:
        pytest.skip(f"the CPU kernels cannot be built here: {problem}")


def module_fp32():
    return ModuleDecoder(load_gpt(FIXTURES / "gpt_v2_tiny.ckpt"))


def module_fp16():
    kernel_or_skip()
    return ModuleDecoder(pack_half(load_gpt(FIXTURES / "gpt_v2_tiny.ckpt")))


def fused():
    kernel_or_skip()
    model = pack_half(load_gpt(FIXTURES / "gpt_v2_tiny.ckpt"))
    return FusedDecoder(model, FusedDecodeLayers.for_model(model))


DECODERS = {"module-fp32": module_fp32, "module-fp16": module_fp16, "fused": fused}

# Six segments of three utterances: lengths, prompts and sampling settings all differ.
SAMPLED = [
    SamplingParams(top_k=15, temperature=1.0, early_stop_num=60, seed=1),
    SamplingParams(top_k=5, top_p=0.8, temperature=0.7, early_stop_num=30, seed=2),
    SamplingParams(top_k=0, temperature=1.3, repetition_penalty=1.0, early_stop_num=45, seed=3),
    SamplingParams(top_k=15, early_stop_num=25, seed=4),
    SamplingParams(top_k=3, repetition_penalty=2.0, early_stop_num=50, seed=5),
    SamplingParams(top_k=15, top_p=0.5, early_stop_num=12, seed=6),
]
GREEDY = [SamplingParams(top_k=1, early_stop_num=p.early_stop_num) for p in SAMPLED]


def segments(decoder, inputs, params):
    phones, bert, prompt = inputs
    cuts = [(0, None), (10, 50), (21, None), (0, 30), (5, 40), (30, None)]
    prompts = [prompt, prompt[:20], None, prompt, prompt[5:], prompt]
    return [
        Job(i, group=f"utt{i % 3}", utterance=decoder.prepare(phones[a:b], bert[:, a:b], p), params=q)
        for i, ((a, b), p, q) in enumerate(zip(cuts, prompts, params))
    ]


def alone(decoder, job: Job) -> list[int]:
    u = job.utterance
    return list(stream(decoder, u.phone_ids, u.bert, u.prompt, job.params))


def run(scheduler: Scheduler, jobs: list[Job], arrivals: dict[int, list[Job]] | None = None, max_steps=10_000):
    """Step until idle, submitting ``arrivals[k]`` before step k; tokens per key, finish order, steps."""
    tokens: dict = {job.key: [] for job in jobs}
    finished, k = [], 0
    arrivals = {0: jobs} if arrivals is None else arrivals
    while k < max_steps and (scheduler.busy() or any(step >= k for step in arrivals)):
        for job in arrivals.get(k, []):
            scheduler.submit(job)
        for event in scheduler.step():
            if isinstance(event, Token):
                tokens[event.job.key].append(event.token)
            else:
                finished.append(event)
        k += 1
    return tokens, finished


@pytest.mark.parametrize("name", DECODERS)
@pytest.mark.parametrize("sampling", ["greedy", "sampled"])
def test_rows_joining_and_leaving_draw_what_they_draw_alone(name, sampling, inputs):
    decoder = DECODERS[name]()
    jobs = segments(decoder, inputs, GREEDY if sampling == "greedy" else SAMPLED)
    want = {job.key: alone(decoder, job) for job in jobs}
    scheduler = Scheduler(decoder, max_rows=4)
    # Arrivals spread over the run: rows join a batch already decoding, others leave meanwhile.
    tokens, finished = run(scheduler, jobs, {0: jobs[:2], 3: jobs[2:3], 7: jobs[3:5], 20: jobs[5:]})
    assert tokens == want
    assert all(isinstance(e, Done) for e in finished) and len(finished) == len(jobs)
    assert {e.job.key: e.result.generated.tolist() for e in finished} == want


def test_the_fused_step_of_a_full_width_head_is_row_exact():
    """head_dim 64 as the full-size model: rows of unequal lengths through decode_rows."""
    kernel_or_skip()
    from test_decode_layers import random_model

    model = pack_half(random_model(hidden=128, heads=2, layers=2, seed=3))
    decoder = FusedDecoder(model, FusedDecodeLayers.for_model(model))
    g = torch.Generator().manual_seed(0)
    jobs = [
        Job(i, i, decoder.prepare(torch.randint(0, 300, (n,), generator=g), torch.randn(1024, n, generator=g), None),
            SamplingParams(early_stop_num=20 + 7 * i, seed=i))
        for i, n in enumerate([9, 23, 4])
    ]  # fmt: skip
    want = {job.key: alone(decoder, job) for job in jobs}
    tokens, _ = run(Scheduler(decoder, max_rows=3), jobs, {0: jobs[:1], 2: jobs[1:]})
    assert tokens == want


def test_segments_of_one_utterance_run_in_order_and_the_oldest_goes_first(inputs):
    decoder = module_fp32()
    jobs = segments(decoder, inputs, GREEDY)  # groups utt0, utt1, utt2, utt0, utt1, utt2
    scheduler = Scheduler(decoder, max_rows=2)
    started, order = set(), []
    for job in jobs:
        scheduler.submit(job)
    while scheduler.busy():
        running = {lane.job.group: lane.job.key for lane in scheduler.running}
        assert len(running) == len(scheduler.running)  # never two segments of one utterance at once
        for event in scheduler.step():
            if event.job.key not in started:
                started.add(event.job.key)
                order.append(event.job.key)
    assert order.index(0) < order.index(3) and order.index(1) < order.index(4) and order.index(2) < order.index(5)
    assert order[:2] == [0, 1]  # admitted in arrival order while rows are free


def test_cancel_removes_waiting_and_running_rows_at_once(inputs):
    decoder = module_fp32()
    jobs = segments(decoder, inputs, SAMPLED)
    want = {job.key: alone(decoder, job) for job in jobs}
    scheduler = Scheduler(decoder, max_rows=4)
    for job in jobs:
        scheduler.submit(job)
    for _ in range(6):
        scheduler.step()
    dropped = scheduler.cancel(lambda job: job.group == "utt1")
    assert sorted(job.key for job in dropped) == [1, 4]
    assert all(lane.job.group != "utt1" for lane in scheduler.running)
    tokens, finished = run(scheduler, [j for j in jobs if j.group != "utt1"], arrivals={})
    assert {e.job.key for e in finished} == {0, 2, 3, 5}
    assert tokens[5] == want[5] and tokens[3] == want[3]  # admitted after the cancel: from their start


def test_a_failing_row_fails_alone(inputs, monkeypatch):
    decoder = module_fp32()
    jobs = segments(decoder, inputs, GREEDY)[:3]
    want = {job.key: alone(decoder, job) for job in jobs}
    broken = jobs[1]
    real = decoder.rows_logits

    def rows_logits(tokens, positions, caches):
        if any(cache is broken_row.cache for cache in caches) and len(tokens) and rows_logits.count > 4:
            raise RuntimeError("boom")
        rows_logits.count += 1
        return real(tokens, positions, caches)

    rows_logits.count = 0
    scheduler = Scheduler(decoder, max_rows=3)
    for job in jobs:
        scheduler.submit(job)
    early = scheduler.step() + scheduler.step()  # two rows admitted, one step of the first
    (broken_row,) = [lane.row for lane in scheduler.running if lane.job is broken]
    monkeypatch.setattr(decoder, "rows_logits", rows_logits)
    tokens, finished = run(scheduler, jobs, arrivals={})
    failures = [e for e in finished if isinstance(e, Failed)]
    assert [e.job.key for e in failures] == [1] and "boom" in str(failures[0].error)
    first = [e.token for e in early if e.job is jobs[0]]
    assert first + tokens[0] == want[0] and tokens[2] == want[2]  # the others go on as alone


def test_a_prefill_that_fails_leaves_the_batch_untouched(inputs):
    decoder = module_fp32()
    jobs = segments(decoder, inputs, SAMPLED)[:2]
    want = alone(decoder, jobs[0])
    u = jobs[1].utterance
    bad = Job("bad", "x", type(u)(u.phone_ids, u.bert[:, :3], None))  # features that do not fit the phones
    tokens, finished = run(Scheduler(decoder), [jobs[0], bad], {0: [jobs[0]], 4: [bad]})
    assert tokens[jobs[0].key] == want
    assert any(isinstance(e, Failed) and e.job.key == "bad" for e in finished)


def test_decoders_that_cannot_join_rows_decode_one_segment_at_a_time(inputs, caplog):
    model = load_gpt(FIXTURES / "gpt_v2_tiny.ckpt")
    decoder = StaticDecoder(model, capacity=512, read_every=4)  # CPU: eager steps, as in the tests there
    jobs = segments(decoder, inputs, SAMPLED)[:3]
    want = {job.key: alone(decoder, job) for job in jobs}
    with caplog.at_level("INFO", logger="gsv.gpt"):
        scheduler = Scheduler(decoder, max_rows=4)
    assert "one segment at a time" in caplog.text and scheduler.max_rows == 1
    for job in jobs:
        scheduler.submit(job)
    tokens: dict = {job.key: [] for job in jobs}
    while scheduler.busy():
        assert len(scheduler.running) <= 1
        for event in scheduler.step():
            if isinstance(event, Token):
                tokens[event.job.key].append(event.token)
    assert tokens == want


def observe(scheduler: Scheduler, jobs: list[Job], arrivals: dict[int, list[Job]]):
    """Like ``run``, also recording, before every step, the running rows as (group, key, steps drawn)."""
    tokens: dict = {job.key: [] for job in jobs}
    seen, k = [], 0
    while scheduler.busy() or any(step >= k for step in arrivals):
        for job in arrivals.get(k, []):
            scheduler.submit(job)
        seen.append([(lane.job.group, lane.job.key, lane.row.k) for lane in scheduler.running])
        for event in scheduler.step():
            if isinstance(event, Token):
                tokens[event.job.key].append(event.token)
        k += 1
    return tokens, seen


@pytest.mark.parametrize("sampling", ["greedy", "sampled"])
def test_the_next_segment_decodes_ahead_and_draws_what_it_draws_alone(sampling, inputs):
    decoder = module_fp32()
    jobs = [
        Job(job.key, "utt", job.utterance, job.params)
        for job in segments(decoder, inputs, GREEDY if sampling == "greedy" else SAMPLED)[:3]
    ]  # three segments of one utterance
    want = {job.key: alone(decoder, job) for job in jobs}
    scheduler = Scheduler(decoder, max_rows=1, ahead=1, ahead_after=5)
    tokens, seen = observe(scheduler, jobs, {0: jobs})
    assert tokens == want
    assert max(len(rows) for rows in seen) == 2  # one row ahead, never more
    ahead_started = [rows for rows in seen if len(rows) == 2]
    assert ahead_started and all(rows[0][2] >= 5 for rows in ahead_started)  # after the first row's 5 draws
    firsts = [min(i for i, rows in enumerate(seen) if any(r[1] == job.key for r in rows)) for job in jobs]
    assert firsts == sorted(firsts)  # started in order
    # Job 1 was running before job 0 ended: its prefill was not paid at the segment boundary.
    last_of_0 = max(i for i, rows in enumerate(seen) if any(r[1] == jobs[0].key for r in rows))
    assert firsts[1] <= last_of_0


def test_decoding_ahead_never_delays_a_new_utterance(inputs):
    decoder = module_fp32()
    jobs = segments(decoder, inputs, GREEDY)  # utt0, utt1, utt2, utt0, utt1, utt2
    want = {job.key: alone(decoder, job) for job in jobs}
    arrivals = {0: [jobs[0], jobs[3]], 2: [jobs[1], jobs[4]], 9: [jobs[2], jobs[5]]}

    def starts(seen) -> dict:
        return {job.key: min(i for i, rows in enumerate(seen) if any(r[1] == job.key for r in rows)) for job in jobs}

    plain = observe(Scheduler(decoder, max_rows=2), jobs, arrivals)
    tokens, seen = observe(Scheduler(decoder, max_rows=2, ahead=1, ahead_after=1), jobs, arrivals)
    assert tokens == plain[0] == want
    assert any(len({g for g, _, _ in rows}) < len(rows) for rows in seen)  # something decoded ahead
    assert all(len(rows) <= 3 and len(rows) - len({g for g, _, _ in rows}) <= 1 for rows in seen)
    # An utterance's first segment starts when it would without decoding ahead (or one admission later).
    with_ahead, without = starts(seen), starts(plain[1])
    assert all(with_ahead[key] <= without[key] + 1 for key in (0, 1, 2))
