"""Small behaviours of the GPT building blocks: KV cache bookkeeping, sampling rules, mask layout."""

from __future__ import annotations

import pytest
import torch

from dora_gpt_sovits.gpt.kv_cache import KVCache
from dora_gpt_sovits.gpt.model import prefix_lm_mask
from dora_gpt_sovits.gpt.sampling import SamplingParams, penalise_repeats, sample, top_k_filter, top_p_filter

pytestmark = pytest.mark.usefixtures("torch_single_thread")  # tiny models; see conftest


def test_cache_writes_in_place_and_compacts():
    cache = KVCache(n_layer=2, batch=3, n_head=2, head_dim=4, max_len=10, dtype=torch.float32, device="cpu")
    storage = cache.k.data_ptr()
    prefix = torch.arange(3 * 2 * 4 * 4, dtype=torch.float32).view(3, 2, 4, 4)
    for layer in range(2):
        k, v = cache.write(layer, prefix, -prefix)
        assert k.shape == (3, 2, 4, 4) and torch.equal(v, -prefix)
    cache.advance(4)
    k, _ = cache.write(0, torch.ones(3, 2, 1, 4), torch.ones(3, 2, 1, 4))
    assert k.shape == (3, 2, 5, 4) and cache.k.data_ptr() == storage

    cache.keep_rows([2, 0])
    assert cache.batch == 2
    assert torch.equal(cache.k[1, :2, :, :4], prefix[[2, 0]])
    assert cache.write(1, torch.zeros(2, 2, 1, 4), torch.zeros(2, 2, 1, 4))[0].shape == (2, 2, 5, 4)

    cache.reset()
    assert (cache.length, cache.batch, cache.visible) == (0, 3, None)
    with pytest.raises(RuntimeError, match="KV cache full"):
        cache.write(0, torch.zeros(3, 2, 11, 4), torch.zeros(3, 2, 11, 4))


def test_cache_padding_mask_follows_rows():
    cache = KVCache(1, 2, 1, 2, 6, torch.float32, "cpu")
    cache.mark_padding(torch.tensor([0, 2]))
    cache.advance(3)
    assert cache.step_mask().shape == (2, 1, 1, 4)
    assert cache.step_mask()[:, 0, 0].tolist() == [[True] * 4, [False, False, True, True]]
    cache.keep_rows([1])
    assert cache.step_mask()[:, 0, 0].tolist() == [[False, False, True, True]]


def test_mask_with_padding():
    allowed = prefix_lm_mask(torch.tensor([2, 1]), torch.tensor([2, 1]), 4)[:, 0]
    # row 0 is [t t s s]; row 1 is [pad pad t s]: pads see only text and themselves
    assert allowed[0].int().tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]
    assert allowed[1].int().tolist() == [[1, 0, 1, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 1, 1]]


def test_penalty_applies_once_per_id_and_in_place():
    logits = torch.tensor([[2.0, -2.0, 1.0, 0.5]])
    seen = torch.tensor([[True, True, False, False]])
    penalise_repeats(logits, seen, 2.0)
    assert logits.tolist() == [[1.0, -4.0, 1.0, 0.5]]


def test_top_p_keeps_first_and_top_k_keeps_ties():
    logits = torch.tensor([[5.0, 0.0, 0.0, -1.0]])
    assert torch.isinf(top_p_filter(logits, 0.01)[0, 1:]).all()  # only the best survives
    assert torch.isfinite(top_p_filter(logits, 0.01)[0, 0])
    kept = top_k_filter(torch.tensor([[3.0, 1.0, 1.0, 0.0]]), 2)
    assert torch.isfinite(kept[0, :3]).all() and torch.isinf(kept[0, 3])


def test_greedy_draws_one_exponential_per_step():
    """Greedy still consumes the random stream, as upstream does (seeded runs depend on it)."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 1025)
    token = sample(logits.clone(), torch.zeros(1, 1025, dtype=torch.bool), SamplingParams(top_k=1), generator)
    assert int(token) == int(logits.argmax())
    reference = torch.Generator().manual_seed(0)
    torch.empty(1, 1025).exponential_(1, generator=reference)
    assert torch.equal(torch.rand(3, generator=generator), torch.rand(3, generator=reference))


def test_params_validation():
    with pytest.raises(ValueError):
        SamplingParams(repetition_penalty=0)
    with pytest.raises(ValueError):
        SamplingParams(early_stop_num=-2)
