"""The vocoder node's streaming path (SegmentStream over decode_chunk) against a one-shot decode.

Token chunks arrive as the GPT node emits them (12 tokens, then 40 at a time). Bounds, on the
upstream fixture model (random weights, signal RMS ~0.17):

* overall RMS difference < 0.05: with random weights every frame attends to every token, so a
  window that cannot see past the 4-token lookahead differs more than a trained model would
  (tests/test_sovits_streaming.py measures ~0.02); a lost, duplicated or misaligned run gives > 0.2;
* no click at a join: the largest sample-to-sample step within 5 ms of each join stays below
  1.5x the largest step anywhere in the one-shot decode.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dora_gpt_sovits.sovits import load_sovits
from dora_gpt_sovits.sovits.streaming import decode_chunk
from dora_gpt_sovits.sovits.token_stream import SegmentStream, StreamPolicy


@pytest.fixture(scope="module")
def model_and_inputs(fixtures_dir):
    torch.manual_seed(0)
    expected = np.load(fixtures_dir / "expected.npz")
    model = load_sovits(fixtures_dir / "sovits_v2_tiny_pk_dict.pth")
    spec = torch.from_numpy(expected["ref_spec"])[None]
    phones = torch.from_numpy(expected["dec_sovits_v2_tiny_pk_dict_text_ids"])[None]
    codes = torch.randint(0, 1024, (120,), generator=torch.Generator().manual_seed(3))
    return model, model.global_condition([spec]), phones, codes, spec


def stream(model, cond, phones, codes, sizes, held=()):
    def decode(history, run, lookahead, position):
        out = decode_chunk(
            model,
            cond,
            phones,
            torch.from_numpy(history),
            torch.from_numpy(run),
            torch.from_numpy(lookahead),
            position=position,
            noise_scale=0.0,
        )
        return out.samples.reshape(-1), out.tail.reshape(-1)

    vocoder = SegmentStream(decode, StreamPolicy(lookahead_tokens=4, min_run_tokens=8))
    pieces, start = [], 0
    for i, size in enumerate(sizes):
        final = i == len(sizes) - 1
        pieces += vocoder.push(codes[start : start + size].numpy(), final, hold=i in held)
        start += size
    return pieces


@pytest.mark.slow
def test_streamed_audio_matches_one_shot_and_joins_are_smooth(model_and_inputs):
    model, cond, phones, codes, spec = model_and_inputs
    pieces = stream(model, cond, phones, codes, [12, 40, 40, 28])
    with torch.inference_mode():
        whole = model.decode(codes[None, None], phones, [spec], noise_scale=0.0)[0, 0]
    streamed = torch.cat(pieces)
    assert streamed.shape == whole.shape
    assert len(pieces) == 4  # audio came out as the chunks arrived, not only at the end
    rms = (streamed - whole).pow(2).mean().sqrt().item()
    assert rms < 0.05, rms

    worst_step = (whole[1:] - whole[:-1]).abs().max().item()
    join = 0
    for piece in pieces[:-1]:
        join += len(piece)
        around = streamed[join - 160 : join + 160]
        assert (around[1:] - around[:-1]).abs().max().item() < 1.5 * worst_step


def recording_vocoder(**policy) -> tuple[SegmentStream, list[tuple[int, int, int, int]]]:
    """A segment vocoder over a stand-in decoder that records each run as
    ``(len(history), position, len(run), len(lookahead))``."""
    runs = []

    def decode(history, run, lookahead, position):
        runs.append((len(history), position, len(run), len(lookahead)))
        return torch.zeros(len(run) * 640), torch.zeros(0)

    return SegmentStream(decode, StreamPolicy(**policy)), runs


@pytest.mark.slow
def test_held_chunks_join_a_longer_run_with_the_same_audio_quality(model_and_inputs):
    model, cond, phones, codes, spec = model_and_inputs
    pieces = stream(model, cond, phones, codes, [12, 40, 40, 28], held={1, 2})  # the vocoder node's coalescing
    with torch.inference_mode():
        whole = model.decode(codes[None, None], phones, [spec], noise_scale=0.0)[0, 0]
    streamed = torch.cat(pieces)
    assert len(pieces) == 2 and streamed.shape == whole.shape  # the first run, then everything else at the end
    assert (streamed - whole).pow(2).mean().sqrt().item() < 0.05


def test_a_held_push_decodes_nothing_and_a_final_one_ignores_hold():
    vocoder, calls = recording_vocoder(lookahead_tokens=4, min_run_tokens=8)
    assert vocoder.push(np.arange(10), final=False)
    assert vocoder.push(np.arange(20), final=False, hold=True) == []
    assert vocoder.push(np.arange(20), final=False)  # the held tokens go out with these
    assert vocoder.push(np.arange(3), final=True, hold=True)
    assert [c[1:] for c in calls] == [(0, 6, 4), (6, 40, 4), (46, 7, 0)]  # (position, run, lookahead)


def test_runs_wait_for_enough_tokens_and_the_final_push_flushes():
    vocoder, calls = recording_vocoder(lookahead_tokens=4, history_tokens=50, min_run_tokens=8)
    assert len(vocoder.push(np.arange(10), False)) == 1  # the first run: 6 decodable, sent at once
    assert vocoder.push(np.arange(4), False) == []  # 4 more decodable < 8
    assert len(vocoder.push(np.arange(6), False)) == 1  # 10 decodable
    assert len(vocoder.push(np.arange(100), True)) == 1
    # (history, position, run, lookahead): the history is every earlier token (< 50)
    assert calls == [(0, 0, 6, 4), (6, 6, 10, 4), (16, 16, 104, 0)]


def test_first_run_goes_out_however_short_later_short_runs_wait():
    vocoder, calls = recording_vocoder(lookahead_tokens=4, min_run_tokens=8)
    assert vocoder.push(np.arange(10), final=False)  # 6 decodable tokens: the first run, sent at once
    assert vocoder.push(np.arange(5), final=False) == []  # 5 more: shorter than min_run, waits
    assert vocoder.push(np.arange(5), final=False)  # 10 now decodable
    assert vocoder.push(np.arange(2), final=True)  # the end flushes whatever is left
    assert [c[1:] for c in calls] == [(0, 6, 4), (6, 10, 4), (16, 6, 0)]  # (position, run, lookahead)
