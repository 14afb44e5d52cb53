"""Our float16 decode-step kernel (gpt/half_matvec.py + .cpp): products, layout, threads, fallbacks.

The kernel is compiled on first use (~25 s once per machine, cached); where a machine cannot
build it (no compiler, not x86-64 AVX2), the kernel tests skip saying why and the fallback tests
still run.
"""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from conftest import FIXTURES

from dora_gpt_sovits.gpt import half_matvec as hm
from dora_gpt_sovits.gpt.loader import load_gpt
from dora_gpt_sovits.gpt.options import OptionError, TorchGPTOptions
from dora_gpt_sovits.gpt.weights import HalfDecodeLinear, QuantizationError, pack_half, weights_in_use


@pytest.fixture(scope="module")
def kernel():
    built, problem = hm._build()
    if not built:
        pytest.skip(f"the float16 kernel cannot be built here: {problem}")


def half_exact(*shape: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(*shape, generator=generator).half().float()  # what official checkpoints hold


@pytest.mark.parametrize("n, k", [(1025, 512), (24, 2048), (8, 8), (3, 16), (1536, 64)])
@pytest.mark.parametrize("rows", [1, 3, 8])
def test_products_match_float32_linear(kernel, n, k, rows):
    g = torch.Generator().manual_seed(n * k + rows)
    w, x, b = half_exact(n, k, generator=g), torch.randn(rows, k, generator=g), torch.randn(n, generator=g)
    got = hm.half_matvec(x, hm.pack_rows(w), b, n)
    # Only the summation order differs from float32: errors grow like sqrt(k) * eps * |x||w|.
    torch.testing.assert_close(got, F.linear(x, w, b), atol=2e-5 * k**0.5, rtol=1e-5)
    torch.testing.assert_close(
        hm.half_matvec(x, hm.pack_rows(w), None, n), F.linear(x, w), atol=2e-5 * k**0.5, rtol=1e-5
    )


def test_results_do_not_depend_on_the_thread_count(kernel):
    g = torch.Generator().manual_seed(0)
    w, x = half_exact(2048, 512, generator=g), torch.randn(1, 512, generator=g)
    packed, previous = hm.pack_rows(w), torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = hm.half_matvec(x, packed, None, 2048)
        torch.set_num_threads(2)
        two = hm.half_matvec(x, packed, None, 2048)
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(one, two)


def test_pack_rows_lays_blocks_out_in_reading_order():
    w = torch.arange(10 * 16, dtype=torch.float32).view(10, 16)
    packed = hm.pack_rows(w)
    assert packed.shape == (2, 2, 8, 8) and packed.dtype == torch.float16 and packed.is_contiguous()
    # block 1 holds rows 8, 9 and six zero rows; its column group 1 holds columns 8..15
    assert torch.equal(packed[1, 1, 0], w[8, 8:].half())
    assert torch.equal(packed[1, 1, 1], w[9, 8:].half())
    assert not packed[1, :, 2:].any()
    assert torch.equal(packed[0, 0].float(), w[:8, :8])
    with pytest.raises(ValueError, match="multiple of 8"):
        hm.pack_rows(torch.zeros(4, 12))


def test_malformed_operands_are_refused(kernel):
    packed = hm.pack_rows(torch.zeros(16, 32))
    with pytest.raises(RuntimeError, match="float32"):
        hm.half_matvec(torch.zeros(1, 32, dtype=torch.float64), packed, None, 16)
    with pytest.raises(RuntimeError, match="pack_rows"):
        hm.half_matvec(torch.zeros(1, 32), packed, None, 17)  # 17 rows need 3 blocks
    with pytest.raises(RuntimeError, match="pack_rows"):
        hm.half_matvec(torch.zeros(1, 32), torch.zeros(16, 32, dtype=torch.float16), None, 16)
    with pytest.raises(RuntimeError, match="bias"):
        hm.half_matvec(torch.zeros(1, 32), packed, torch.zeros(15), 16)


def test_compiled_callers_see_an_opaque_operator(kernel):
    w, x = half_exact(24, 64, generator=torch.Generator().manual_seed(1)), torch.randn(1, 64)
    packed = hm.pack_rows(w)
    compiled = torch.compile(lambda x: torch.relu(hm.half_matvec(x, packed, None, 24)), fullgraph=True, dynamic=False)
    torch.testing.assert_close(compiled(x), torch.relu(F.linear(x, w)), atol=1e-4, rtol=1e-5)


def test_model_layers_use_the_kernel_and_keep_float32_for_the_prefill(kernel):
    model = pack_half(load_gpt(FIXTURES / "gpt_v2_tiny.ckpt"), "native")
    qkv = model.layers[0].qkv
    assert isinstance(qkv, HalfDecodeLinear) and qkv.half_weight is not None and qkv.packed is None
    assert weights_in_use(model) == "fp16 (half_matvec)"
    assert "half_matvec" in repr(qkv)
    x = torch.randn(2, 9, 64)  # 18 rows: the prefill's float32 product
    torch.testing.assert_close(qkv(x), F.linear(x, qkv.weight, qkv.bias), atol=0, rtol=0)


@pytest.fixture
def unbuildable(monkeypatch):
    """A machine where the kernel cannot be had (as without a compiler)."""
    monkeypatch.setattr(hm, "_unsupported_reason", lambda: "no C++ compiler ('c++' is not on PATH)")
    hm._build.cache_clear()
    hm._log_once.cache_clear()
    yield
    hm._build.cache_clear()


def test_auto_falls_back_to_fbgemm_and_says_why(unbuildable, caplog):
    with caplog.at_level(logging.WARNING, logger="gsv.gpt"):
        model = pack_half(load_gpt(FIXTURES / "gpt_v2_tiny.ckpt"), "auto")
    assert weights_in_use(model) == "fp16 (FBGEMM)"
    assert "no C++ compiler" in caplog.text and "FBGEMM" in caplog.text


def test_native_refuses_where_the_kernel_cannot_be_had(unbuildable):
    with pytest.raises(QuantizationError, match="GSV_HALF_MATVEC=native: no C\\+\\+ compiler"):
        pack_half(load_gpt(FIXTURES / "gpt_v2_tiny.ckpt"), "native")


def test_fbgemm_choice_never_builds(monkeypatch):
    monkeypatch.setattr(hm, "_build", lambda: pytest.fail("built the kernel although GSV_HALF_MATVEC=fbgemm"))
    assert weights_in_use(pack_half(load_gpt(FIXTURES / "gpt_v2_tiny.ckpt"), "fbgemm")) == "fp16 (FBGEMM)"


def test_a_failed_build_is_reported_in_one_line(monkeypatch, tmp_path):
    def failing_load(**kwargs):
        raise RuntimeError("Error building extension 'gsv_cpu_kernels'\nhalf_matvec.cpp:1: error: boom")

    from torch.utils import cpp_extension

    monkeypatch.setattr(hm, "_unsupported_reason", lambda: None)
    monkeypatch.setattr(hm, "BUILD_FOLDER", tmp_path)
    monkeypatch.setattr(cpp_extension, "load", failing_load)
    hm._build.cache_clear()
    try:
        assert hm._build() == (
            False,
            "building half_matvec.cpp, decode_layers.cpp failed: half_matvec.cpp:1: error: boom",
        )
    finally:
        hm._build.cache_clear()


def test_a_finished_build_is_loaded_without_torch_and_a_dead_builders_lock_blocks_nothing(monkeypatch, tmp_path):
    from torch.utils import cpp_extension

    built, loaded = [], []

    def fake_build(**kwargs):
        assert not (tmp_path / "lock").exists()  # torch 2.13 would wait on it forever
        built.append(kwargs["build_directory"])

    monkeypatch.setattr(cpp_extension, "load", fake_build)
    monkeypatch.setattr(torch.ops, "load_library", loaded.append)
    (tmp_path / "lock").touch()  # what a node killed inside cpp_extension.load leaves behind
    hm._load_or_build(tmp_path)
    assert built == [str(tmp_path)] and loaded == [] and (tmp_path / "finished").exists()
    hm._load_or_build(tmp_path)  # the next process: loads, builds nothing, takes no torch lock
    assert built == [str(tmp_path)] and loaded == [str(tmp_path / "gsv_cpu_kernels.so")]


def test_an_interrupted_build_is_built_again(monkeypatch, tmp_path):
    from torch.utils import cpp_extension

    def failing_build(**kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(cpp_extension, "load", failing_build)
    with pytest.raises(RuntimeError):
        hm._load_or_build(tmp_path)
    assert not (tmp_path / "finished").exists()  # so the next process builds instead of loading


def test_each_source_and_torch_version_builds_in_its_own_folder(monkeypatch, tmp_path):
    source, header = tmp_path / "k.cpp", tmp_path / "k.h"
    source.write_text("int a;")
    header.write_text("int h;")
    monkeypatch.setattr(hm, "SOURCES", (source,))
    monkeypatch.setattr(hm, "HEADERS", (header,))
    first = hm._build_folder()
    source.write_text("int b;")
    second = hm._build_folder()
    header.write_text("int i;")  # a header edit rebuilds too
    assert len({first, second, hm._build_folder()}) == 3 and first.parent == hm.BUILD_FOLDER


def test_the_choice_is_read_and_checked_from_the_environment():
    assert TorchGPTOptions.from_env({}).half_matvec == "auto"
    assert TorchGPTOptions.from_env({"GSV_HALF_MATVEC": "FBGEMM"}).half_matvec == "fbgemm"
    with pytest.raises(OptionError, match="GSV_HALF_MATVEC"):
        TorchGPTOptions.from_env({"GSV_HALF_MATVEC": "avx"})
