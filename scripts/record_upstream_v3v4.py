#!/usr/bin/env python3
"""Record upstream GPT-SoVITS v3 / v4 reference outputs (SoVITS + CFM/DiT + vocoders) as test fixtures.

Writes tests/fixtures/upstream-v3v4/: tiny randomly initialised models in the official file formats
(SoVITS v3 / v4 bases, a LoRA fine-tune of each, a BigVGAN folder, a v4 ``vocoder.pth``), and
``expected.npz`` + ``manifest.json`` with what upstream's own code computes from them, in float32
on CPU. Every number comes from upstream classes and functions imported from a plain copy of the
upstream tree; this script only builds inputs, draws weights and stores results.

Upstream tree (no model downloads needed):

    git --git-dir /work/.mirror/RVC-Boss+GPT-SoVITS/repo archive 48b1a01 GPT_SoVITS | tar -x -C /tmp/up48

Environment (a venv of its own; versions used for the committed fixtures):

    python3.11 -m venv /tmp/upstream-v3v4-venv
    /tmp/upstream-v3v4-venv/bin/pip install torch==2.13.0+cpu   # the CPU wheel (local wheel mirror)
    /tmp/upstream-v3v4-venv/bin/pip install numpy==1.26.4 x_transformers==2.31.10 einops==0.8.2 \
        peft==0.17.1 librosa==0.10.2 transformers==4.57.6 huggingface_hub==0.36.2 scipy==1.17.1 \
        tqdm packaging pyyaml
    /tmp/upstream-v3v4-venv/bin/pip install --no-deps torchaudio==2.11.1
    # torchaudio 2.11.1 is the newest on the index; its compiled extension was built for a CUDA
    # torch 2.11 and does not load next to torch 2.13+cpu, so lib/*.so were moved out of the
    # package. torchaudio then runs without its extension; only transforms.Resample (pure torch)
    # is used, by upstream's TTS.resample.
    /tmp/upstream-v3v4-venv/bin/python scripts/record_upstream_v3v4.py --upstream /tmp/up48 \
        --out tests/fixtures/upstream-v3v4

numpy<2, librosa 0.10.2, peft<0.18 and transformers<5 follow upstream's requirements.txt;
x_transformers is unpinned upstream (its rotary layout has been the same from 1.31.14 to 2.31.10).

Stand-ins, said plainly (nothing numeric is replaced):
  * ``TTS_infer_pack/TTS.py`` is imported with tiny stand-ins for modules whose code is not run here:
    ``ffmpeg``, ``AR.models.t2s_lightning_module``, ``feature_extractor.cnhubert``,
    ``tools.audio_sr``, ``tools.i18n.i18n``, ``sv``, ``TTS_infer_pack.TextPreprocessor`` and
    ``TTS_infer_pack.text_segmentation_method`` (``TTS_infer_pack/__init__.py`` is skipped).
  * ``TTS.init_vits_weights``, ``TTS.init_vocoder``, ``TTS._get_ref_spec`` and
    ``TTS.using_vocoder_synthesis`` are called as plain functions on a small object that carries the
    attributes they use (configs, prompt_cache, vocoder_configs, ...), instead of building a full
    ``TTS`` (which would load GPT, BERT and HuBERT).
  * The tiny SoVITS model is upstream's ``SynthesizerTrnV3`` whose hard-coded big parts are swapped
    for small instances of the same upstream classes (see TINY_* below); the loader is pointed at
    that builder. ``TTS.init_vocoder``'s v4 branch is pointed at a builder that passes
    ``upsample_initial_channel=64`` instead of 512 to upstream's ``Generator``; its v3 branch loads the
    tiny BigVGAN folder through upstream's ``BigVGAN.from_pretrained`` (``now_dir`` pointed at a
    temporary tree that links the fixture files at upstream's default paths).
  * ``torchaudio.load`` (inside TTS.py only) returns the fixed reference waveform.
  * The v4 base file carries no header tag (upstream knows the official s2Gv4.pth by md5 only), so
    its md5 is added to ``process_ckpt.hash_pretrained_dict`` before loading, as a loader must be
    told. ``process_ckpt.ttime`` is fixed so ``my_save``'s temporary file name (which torch writes
    into the zip) is reproducible.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import importlib.metadata
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parent.parent
COMMIT = "48b1a0169a28582a8984402f82cf438d3bfa6aca"

# ---- tiny model shapes -------------------------------------------------------------------------
TINY_DIT = dict(dim=128, depth=2, heads=2, dim_head=64, ff_mult=2, text_dim=64, conv_layers=2)
TINY_BRIDGE_CH = 64  # bridge Conv1d 192 -> 64, wns1 Encoder(64, 64, 64, 5, 1, 2, gin 512), linear_mel 64 -> 100
TINY_WNS1_LAYERS = 2
V4_VOCODER_CH = 64
LORA_RANK = 4

SEEDS = {"v3": 3003, "v4": 4004}
REF_SR = 32000
REF_SECONDS = 5.4  # > T_ref frames for both v3 (468 @ 93.75/s) and v4 (500 @ 100/s): the crop branch runs
N_PROMPT_CODES = 135  # 5.4 s of 25 Hz tokens
N_PROMPT_PHONES = 41
N_TARGET_CODES = 160  # v3: 600 frames (chunks 466+134), v4: 640 frames (500+140)
N_TARGET_PHONES = 67
SYNTH_RUNS = [  # (name, sample_steps, speed, seed)
    ("s4", 4, 1.0, 11),
    ("s8", 8, 1.0, 12),
    ("s4_speed1.25", 4, 1.25, 13),
]
CFM_SEED = 1234


def sovits_hps(version: str) -> dict:
    """The training config dict (s2.json with the webui's v3/v4 fields), tiny text encoder."""
    return {
        "train": {
            "log_interval": 100,
            "eval_interval": 500,
            "seed": 1234,
            "epochs": 2,
            "learning_rate": 0.0001,
            "betas": [0.8, 0.99],
            "eps": 1e-09,
            "batch_size": 4,
            "fp16_run": True,
            "lr_decay": 0.999875,
            "segment_size": 20480,
            "init_lr_ratio": 1,
            "warmup_epochs": 0,
            "c_mel": 45,
            "c_kl": 1.0,
            "text_low_lr_rate": 0.4,
            "grad_ckpt": False,
            "lora_rank": str(LORA_RANK),
            "pretrained_s2G": "",
            "if_save_latest": True,
            "if_save_every_weights": True,
            "save_every_epoch": 1,
        },
        "data": {
            "max_wav_value": 32768.0,
            "sampling_rate": 32000,
            "filter_length": 2048,
            "hop_length": 640,
            "win_length": 2048,
            "n_mel_channels": 128,
            "mel_fmin": 0.0,
            "mel_fmax": None,
            "add_blank": True,
            "n_speakers": 300,
            "cleaned_text": True,
            "exp_dir": f"logs/tiny_{version}",
        },
        "model": {
            "inter_channels": 192,
            "hidden_channels": 192,
            "filter_channels": 64,
            "n_heads": 2,
            "n_layers": 2,
            "kernel_size": 3,
            "p_dropout": 0.1,
            "resblock": "1",
            "resblock_kernel_sizes": [3, 7, 11],
            "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
            "upsample_rates": [10, 8, 2, 2, 2],
            "upsample_initial_channel": 512,
            "upsample_kernel_sizes": [16, 16, 8, 2, 2],
            "n_layers_q": 3,
            "use_spectral_norm": False,
            "gin_channels": 512,
            "semantic_frame_rate": "25hz",
            "freeze_quantizer": True,
            "version": version,
        },
        "s2_ckpt_dir": f"logs/tiny_{version}",
        "content_module": "cnhubert",
        "name": f"tiny_{version}",
        "version": version,
        "save_weight_dir": None,  # filled in at save time
    }


BIGVGAN_CONFIG = {
    "resblock": "1",
    "num_gpus": 0,
    "batch_size": 4,
    "learning_rate": 0.0001,
    "adam_b1": 0.8,
    "adam_b2": 0.99,
    "lr_decay": 0.9999996,
    "seed": 1234,
    "upsample_rates": [4, 4, 2, 2, 2, 2],
    "upsample_kernel_sizes": [8, 8, 4, 4, 4, 4],
    "upsample_initial_channel": 128,
    "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "use_tanh_at_final": False,
    "use_bias_at_final": False,
    "activation": "snakebeta",
    "snake_logscale": True,
    "num_mels": 100,
    "num_freq": 1025,
    "n_fft": 1024,
    "hop_size": 256,
    "win_size": 1024,
    "sampling_rate": 24000,
    "fmin": 0,
    "fmax": None,
    "fmax_for_loss": None,
    "segment_size": 65536,
    "num_workers": 4,
}


# ---- upstream import -------------------------------------------------------------------------------
def _stub(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    sys.modules[name] = mod
    return mod


class _I18n:
    def __init__(self, *a, **k):
        pass

    def __call__(self, s):
        return s


def import_upstream(up: Path):
    root = up / "GPT_SoVITS"
    sys.path[:0] = [str(root), str(up)]
    _stub("ffmpeg")
    _stub("tools")
    _stub("tools.i18n")
    _stub("tools.i18n.i18n", I18nAuto=_I18n, scan_language_list=lambda: [])
    _stub("tools.audio_sr", AP_BWE=object)
    _stub("AR")
    _stub("AR.models")
    _stub("AR.models.t2s_lightning_module", Text2SemanticLightningModule=object)
    _stub("feature_extractor")
    _stub("feature_extractor.cnhubert", CNHubert=object)
    _stub("sv", SV=object)
    pkg = types.ModuleType("TTS_infer_pack")
    pkg.__path__ = [str(root / "TTS_infer_pack")]
    sys.modules["TTS_infer_pack"] = pkg
    _stub("TTS_infer_pack.TextPreprocessor", TextPreprocessor=object)
    _stub("TTS_infer_pack.text_segmentation_method", splits=set())
    up_mods = types.SimpleNamespace()
    up_mods.models = importlib.import_module("module.models")
    up_mods.mel_processing = importlib.import_module("module.mel_processing")
    up_mods.process_ckpt = importlib.import_module("process_ckpt")
    up_mods.utils = importlib.import_module("utils")
    up_mods.TTS = importlib.import_module("TTS_infer_pack.TTS")
    up_mods.bigvgan = importlib.import_module("BigVGAN.bigvgan")
    up_mods.env = importlib.import_module("BigVGAN.env")
    up_mods.dit = sys.modules["GPT_SoVITS.f5_tts.model.backbones.dit"]
    up_mods.peft = importlib.import_module("peft")
    return up_mods


# ---- tiny models -------------------------------------------------------------------------------
@contextlib.contextmanager
def patched(obj, name, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def make_tiny_builder(U):
    """A drop-in for upstream's SynthesizerTrnV3 constructor that yields the tiny variant."""
    M = U.models
    Encoder = M.Encoder

    def tiny_dit(**_big):
        return U.dit.DiT(**TINY_DIT)

    def tiny_encoder(*_a, gin_channels=0, **_k):
        return Encoder(
            TINY_BRIDGE_CH, TINY_BRIDGE_CH, TINY_BRIDGE_CH, 5, 1, TINY_WNS1_LAYERS, gin_channels=gin_channels
        )

    def build(*args, **kwargs):
        # the big DiT / wns1 are never allocated: the constructor sees tiny factories for them
        with patched(M, "DiT", tiny_dit), patched(M, "Encoder", tiny_encoder):
            m = M.SynthesizerTrnV3(*args, **kwargs)
        hidden = kwargs.get("inter_channels", 192)
        m.bridge = nn.Sequential(nn.Conv1d(hidden, TINY_BRIDGE_CH, 1, stride=1), nn.LeakyReLU())
        m.wns1 = tiny_encoder(gin_channels=kwargs.get("gin_channels", 0))
        m.linear_mel = nn.Conv1d(TINY_BRIDGE_CH, 100, 1, stride=1)
        m.cfm = M.CFM(100, U.dit.DiT(**TINY_DIT))
        if m.freeze_quantizer:
            M.set_no_grad(m.ssl_proj)
            M.set_no_grad(m.quantizer)
            M.set_no_grad(m.enc_p)
        return m

    return build


def _pow2(x: float) -> float:
    return 2.0 ** round(math.log2(x))


def _levels(gen, shape, scale, kmax):
    k = torch.randint(-kmax, kmax + 1, tuple(shape), generator=gen)
    return k.to(torch.float32) * scale


def draw_weights(model: nn.Module, seed: int, only_prefixes=None, lora=False):
    """Overwrite every parameter (and the codebook buffers) with fp16-exact values k*2^e."""
    gen = torch.Generator().manual_seed(seed)
    kinds = {}
    for mname, mod in model.named_modules():
        for pname, _ in mod.named_parameters(recurse=False):
            kinds[(mname + "." if mname else "") + pname] = type(mod).__name__
    sd = model.state_dict()
    new = {}
    for name, t in sd.items():
        if only_prefixes is not None and not any(name.startswith(p) for p in only_prefixes):
            continue
        if lora and "lora_" not in name:
            continue
        if not t.is_floating_point():
            continue
        base = name.rsplit(".", 1)[-1]
        kind = kinds.get(name, "buffer")
        shape = t.shape
        if kind == "buffer":
            if base == "embed":
                v = _levels(gen, shape, 0.5, 1)
            elif base == "embed_avg":
                v = torch.zeros(shape)  # training-only EMA state; not read by inference
            elif base == "cluster_size":
                v = torch.ones(shape)
            elif base == "inited":
                v = torch.ones(shape)
            else:
                continue  # rotary inv_freq, BigVGAN Kaiser filters: keep upstream's computed values
        elif "lora_" in name:
            fan_in = shape[1]
            v = _levels(gen, shape, _pow2(1.0 / (math.sqrt(fan_in) * 1.41)), 2)
        elif base == "bias" or base == "beta" and kind != "SnakeBeta":
            v = _levels(gen, shape, 2.0**-4, 3)
        elif base == "gamma" and kind == "LayerNorm" or (kind == "LayerNorm" and base == "weight"):
            v = 1.0 + _levels(gen, shape, 2.0**-3, 2)
        elif kind in ("GRN",):
            v = _levels(gen, shape, 2.0**-3, 3)
        elif kind in ("Snake", "SnakeBeta"):
            v = _levels(gen, shape, 2.0**-3, 3)
        elif base == "weight_g":
            v = 1.0 + _levels(gen, shape, 2.0**-3, 2)
        elif kind == "Embedding":
            v = _levels(gen, shape, 2.0**-2, 2)
        elif base in ("emb_rel_k", "emb_rel_v"):
            v = _levels(gen, shape, 2.0**-3, 3)
        elif t.dim() >= 2:
            if kind == "ConvTranspose1d":
                stride = dict(model.named_modules())[name.rsplit(".", 1)[0]].stride[0]
                fan_in = shape[0] * shape[2] / stride
            else:
                fan_in = float(np.prod(shape[1:]))
            # large tensors take 3 levels (they compress better), the others 5; std of k: 0.82 / 1.41
            kmax, kstd = (1, 0.82) if t.numel() >= 65536 else (2, 1.41)
            v = _levels(gen, shape, _pow2(1.0 / (math.sqrt(fan_in) * kstd)), kmax)
        else:
            v = _levels(gen, shape, 2.0**-4, 3)
        new[name] = v.to(t.dtype)
    missing = model.load_state_dict(new, strict=False)
    assert not missing.unexpected_keys, missing.unexpected_keys
    return sorted(new)


def fp16_exact(sd: dict) -> bool:
    """Every drawn tensor survives fp16 storage unchanged (the rotary inv_freq buffer does not: a quirk
    of the official files too, whose fp16 copy is what a loaded model uses)."""
    return all(
        torch.equal(v.float(), v.half().float())
        for k, v in sd.items()
        if v.is_floating_point() and not k.endswith("inv_freq")
    )


# ---- helpers -----------------------------------------------------------------------------------
def sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def ref_waveform() -> np.ndarray:
    """Speech-like analytic signal (harmonics, vibrato, syllable envelope, a little noise), 16-bit grid."""
    n = int(REF_SR * REF_SECONDS)
    t = np.arange(n, dtype=np.float64) / REF_SR
    f0 = 140.0 + 25.0 * np.sin(2 * np.pi * 0.7 * t) + 6.0 * np.sin(2 * np.pi * 5.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / REF_SR
    sig = sum((0.8 / h) * np.sin(h * phase + 0.3 * h) for h in range(1, 16))
    env = 0.55 + 0.45 * np.sin(2 * np.pi * 3.1 * t) ** 2
    rng = np.random.default_rng(20260)
    sig = sig * env + 0.02 * rng.standard_normal(n)
    sig = 0.6 * sig / np.abs(sig).max()
    return (np.round(sig * 32768.0) / 32768.0).astype(np.float32)


def write_npz(path: Path, arrays: dict):
    """np.savez_compressed, but with fixed zip timestamps so that regeneration is byte-identical."""
    import io
    import zipfile

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            bio = io.BytesIO()
            np.lib.format.write_array(bio, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, bio.getvalue(), compresslevel=9)


class Recorder:
    def __init__(self):
        self.arrays = {}
        self.meta = {}

    def add(self, name, value, meaning, producer):
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        value = np.asarray(value)
        if value.dtype == np.float64:
            value = value.astype(np.float32)
        if value.dtype in (np.int32, np.int16):
            value = value.astype(np.int64)
        assert name not in self.arrays, name
        self.arrays[name] = value
        self.meta[name] = {
            "shape": list(value.shape),
            "dtype": str(value.dtype),
            "meaning": meaning,
            "upstream": producer,
        }


@contextlib.contextmanager
def record_randn(store: list):
    """Record every tensor torch.randn returns (CFM.inference draws its noise with torch.randn)."""
    orig = torch.randn

    def wrapped(*a, **k):
        out = orig(*a, **k)
        store.append(out.detach().clone())
        return out

    torch.randn = wrapped
    try:
        yield
    finally:
        torch.randn = orig


class FakeConfigs:
    """The attributes of TTS_Config that the TTS methods used here read or write."""

    def __init__(self, defaults):
        self.device = torch.device("cpu")
        self.is_half = False
        self.default_configs = defaults
        self.version = None

    def update_version(self, version):
        self.version = version

    def save_configs(self, *a, **k):
        pass


def make_tts_self(U, defaults):
    TTS = U.TTS.TTS
    s = types.SimpleNamespace()
    s.configs = FakeConfigs(defaults)
    s.vocoder = None
    s.vocoder_configs = {"sr": None, "T_ref": None, "T_chunk": None, "upsample_rate": None, "overlapped_len": None}
    s.is_v2pro = False
    s.precision = torch.float32
    s.prompt_cache = {"ref_audio_path": None, "prompt_semantic": None, "refer_spec": [], "phones": None}
    s.empty_cache = lambda: None
    s.init_sv_model = lambda: None
    s.init_vocoder = lambda version: TTS.init_vocoder(s, version)
    return s


# ---- main --------------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", required=True, type=Path, help="folder that holds GPT_SoVITS/ at the commit below")
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "upstream-v3v4")
    ap.add_argument("--commit", default=COMMIT)
    args = ap.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    U = import_upstream(args.upstream.resolve())
    M, PC, TTSmod = U.models, U.process_ckpt, U.TTS
    TTS = TTSmod.TTS
    build_tiny = make_tiny_builder(U)
    work = Path(tempfile.gettempdir()) / "record_upstream_v3v4_work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    os.chdir(work)  # my_save writes its temporary file into the current directory
    PC.ttime = lambda: 0  # fixed temporary name -> reproducible zip member names

    R = Recorder()
    files = {}
    manifest = {
        "upstream": {"repo": "RVC-Boss/GPT-SoVITS", "commit": args.commit},
        "recorded_with": {
            "python": platform.python_version(),
            **{
                p: importlib.metadata.version(p)
                for p in [
                    "torch",
                    "numpy",
                    "x_transformers",
                    "einops",
                    "peft",
                    "librosa",
                    "transformers",
                    "torchaudio",
                    "huggingface_hub",
                    "scipy",
                ]
            },
            "torch_threads": 1,
        },
        "tiny_model": {
            "dit": TINY_DIT,
            "bridge": "Sequential(Conv1d(192, 64, 1), LeakyReLU())",
            "wns1": "module.models.Encoder(64, 64, 64, kernel 5, dilation 1, n_layers 2, gin_channels 512)",
            "linear_mel": "Conv1d(64, 100, 1)",
            "cfm": "module.models.CFM(100, DiT(**dit))",
        },
    }

    # ---- tiny vocoders (files) -------------------------------------------------------------------
    bdir = out / "bigvgan_tiny"
    bdir.mkdir(exist_ok=True)
    (bdir / "config.json").write_text(json.dumps(BIGVGAN_CONFIG, indent=4) + "\n")
    torch.manual_seed(0)
    bv = U.bigvgan.BigVGAN(U.env.AttrDict(BIGVGAN_CONFIG))
    draw_weights(bv, 7001)
    with torch.no_grad():  # keep the output mostly inside the final clamp to [-1, 1]
        bv.conv_post.weight_g.mul_(2.0**-8)
    # The vocoder files hold float32 like the official releases; values are fp16-exact anyway.
    torch.save({"generator": bv.state_dict()}, bdir / "bigvgan_generator.pt")
    torch.manual_seed(0)
    hg = M.Generator(
        initial_channel=100,
        resblock="1",
        resblock_kernel_sizes=[3, 7, 11],
        resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]],
        upsample_rates=[10, 6, 2, 2, 2],
        upsample_initial_channel=V4_VOCODER_CH,
        upsample_kernel_sizes=[20, 12, 4, 4, 4],
        gin_channels=0,
        is_bias=True,
    )
    hg.remove_weight_norm()
    draw_weights(hg, 7002)
    with torch.no_grad():  # keep the final tanh mostly out of saturation
        hg.conv_post.weight.mul_(2.0**-4)
    torch.save(hg.state_dict(), out / "vocoder_v4_tiny.pth")

    # default paths of TTS.init_vocoder, linked to the fixture files
    pm = work / "GPT_SoVITS" / "pretrained_models"
    (pm / "gsv-v4-pretrained").mkdir(parents=True)
    os.symlink(bdir, pm / "models--nvidia--bigvgan_v2_24khz_100band_256x")
    os.symlink(out / "vocoder_v4_tiny.pth", pm / "gsv-v4-pretrained" / "vocoder.pth")
    TTSmod.now_dir = str(work)
    TTSmod.Generator = lambda **kw: M.Generator(**{**kw, "upsample_initial_channel": V4_VOCODER_CH})
    TTSmod.SynthesizerTrnV3 = build_tiny

    # ---- SoVITS files ----------------------------------------------------------------------------
    paths = {}
    lora_merged_info = {}
    for version in ("v3", "v4"):
        seed = SEEDS[version]
        hd = sovits_hps(version)
        hd["save_weight_dir"] = f"SoVITS_weights_{version}"  # relative to the working directory, as in the webui
        save_dir = work / hd["save_weight_dir"]
        save_dir.mkdir()
        hps = U.utils.HParams(**hd)
        # base model, as savee() writes it
        torch.manual_seed(seed)
        net = build_tiny(
            hps.data.filter_length // 2 + 1,
            hps.train.segment_size // hps.data.hop_length,
            n_speakers=hps.data.n_speakers,
            **hps.model,
        )
        draw_weights(net, seed)
        assert fp16_exact(net.state_dict())
        base_sd = {k: v.clone() for k, v in net.state_dict().items()}
        msg = PC.savee(net.state_dict(), f"base_{version}", 8, 96, hps, model_version=version)
        assert msg == "Success.", msg
        src = save_dir / (f"base_{version}.pth")
        if version == "v3":
            name = "sovits_v3_tiny_02.pth"
            data = src.read_bytes()
            (out / name).write_bytes(b"02" + data[2:])  # tag 02 = v3 base (process_ckpt.head2version)
        else:
            name = "sovits_v4_tiny_pk.pth"
            shutil.copyfile(src, out / name)
        paths[version] = out / name

        # LoRA fine-tune of it, as s2_train_v3_lora.py saves it
        torch.manual_seed(seed + 1)
        net_l = build_tiny(
            hps.data.filter_length // 2 + 1,
            hps.train.segment_size // hps.data.hop_length,
            n_speakers=hps.data.n_speakers,
            **hps.model,
        )
        net_l.load_state_dict(base_sd)
        lora_config = U.peft.LoraConfig(
            target_modules=["to_k", "to_q", "to_v", "to_out.0"],
            r=LORA_RANK,
            lora_alpha=LORA_RANK,
            init_lora_weights=True,
        )
        net_l.cfm = U.peft.get_peft_model(net_l.cfm, lora_config)
        no_grad_names = {n for n, p in net_l.named_parameters() if not p.requires_grad}
        # "training" changed the trainable parts: ref_enc, bridge, wns1, linear_mel and the LoRA matrices
        trainable = sorted({n.split(".")[0] for n, p in net_l.named_parameters() if p.requires_grad})
        draw_weights(net_l, seed + 2, only_prefixes=[t + "." for t in trainable if t != "cfm"])
        draw_weights(net_l, seed + 3, only_prefixes=["cfm."], lora=True)
        ckpt = net_l.state_dict()
        sim_ckpt = {k: ckpt[k].half().cpu() for k in ckpt if k not in no_grad_names}
        msg = PC.savee(sim_ckpt, f"lora_{version}", 2, 24, hps, model_version=version, lora_rank=LORA_RANK)
        assert msg == "Success.", msg
        lname = "sovits_{}_tiny_lora_0{}.pth".format(version, "3" if version == "v3" else "4")
        shutil.copyfile(save_dir / (f"lora_{version}.pth"), out / lname)
        paths[version + "_lora"] = out / lname
        lora_merged_info[version] = sorted(k for k in sim_ckpt)

    # ---- model file facts -----------------------------------------------------------------------
    v4_md5 = PC.get_hash_from_file(str(paths["v4"]))
    detected_unregistered = {k: list(PC.get_sovits_version_from_path_fast(str(p))) for k, p in paths.items()}
    PC.hash_pretrained_dict[v4_md5] = ["v2", "v4", False]  # how a loader is told that this file is a v4 base
    defaults = {"v3": {"vits_weights_path": str(paths["v3"])}, "v4": {"vits_weights_path": str(paths["v4"])}}

    for key, p in paths.items():
        d = PC.load_sovits_new(str(p))
        w = d["weight"]
        files[p.name] = {
            "sha256": sha256(p),
            "size": p.stat().st_size,
            "first_bytes": p.read_bytes()[:2].decode("latin1"),
            "md5_first_8192": PC.get_hash_from_file(str(p)),
            "detected_by_upstream": list(PC.get_sovits_version_from_path_fast(str(p))),
            "detected_without_md5_registration": detected_unregistered[key],
            "info": d["info"],
            "lora_rank": d.get("lora_rank"),
            "config": json.loads(json.dumps(d["config"], default=lambda o: o.__dict__)),
            "config_type": type(d["config"]).__module__ + "." + type(d["config"]).__name__,
            "n_tensors": len(w),
            "n_elements": int(sum(v.numel() for v in w.values())),
            "dtypes": sorted({str(v.dtype) for v in w.values()}),
            "tensors": {k: list(v.shape) for k, v in w.items()},
        }
    files["bigvgan_tiny/config.json"] = {
        "sha256": sha256(bdir / "config.json"),
        "size": (bdir / "config.json").stat().st_size,
    }
    gsd = torch.load(bdir / "bigvgan_generator.pt", map_location="cpu", weights_only=False)["generator"]
    files["bigvgan_tiny/bigvgan_generator.pt"] = {
        "sha256": sha256(bdir / "bigvgan_generator.pt"),
        "size": (bdir / "bigvgan_generator.pt").stat().st_size,
        "config": BIGVGAN_CONFIG,
        "n_tensors": len(gsd),
        "tensors": {k: list(v.shape) for k, v in gsd.items()},
    }
    vsd = torch.load(out / "vocoder_v4_tiny.pth", map_location="cpu", weights_only=False)
    files["vocoder_v4_tiny.pth"] = {
        "sha256": sha256(out / "vocoder_v4_tiny.pth"),
        "size": (out / "vocoder_v4_tiny.pth").stat().st_size,
        "config": {
            "initial_channel": 100,
            "resblock": "1",
            "resblock_kernel_sizes": [3, 7, 11],
            "resblock_dilation_sizes": [[1, 3, 5]] * 3,
            "upsample_rates": [10, 6, 2, 2, 2],
            "upsample_initial_channel": V4_VOCODER_CH,
            "upsample_kernel_sizes": [20, 12, 4, 4, 4],
            "gin_channels": 0,
            "is_bias": True,
        },
        "n_tensors": len(vsd),
        "tensors": {k: list(v.shape) for k, v in vsd.items()},
    }
    manifest["files"] = files
    manifest["lora_file_keys"] = lora_merged_info

    # ---- inputs ---------------------------------------------------------------------------------
    g = torch.Generator().manual_seed(99)
    wav = ref_waveform()
    prompt_codes = torch.randint(0, 1024, (N_PROMPT_CODES,), generator=g)
    prompt_phones = torch.randint(1, 732, (N_PROMPT_PHONES,), generator=g)
    target_codes = torch.randint(0, 1024, (N_TARGET_CODES,), generator=g)
    target_phones = torch.randint(1, 732, (N_TARGET_PHONES,), generator=g)
    R.add(
        "ref_wav32k",
        wav,
        "reference waveform, mono, 32 kHz, values on the 16-bit grid (what torchaudio.load returns as [1, N])",
        "input",
    )
    R.add("prompt_codes", prompt_codes, "prompt semantic tokens (25 Hz), used as codes[None, None]", "input")
    R.add("prompt_phones", prompt_phones, "prompt phone ids (v2 symbol table)", "input")
    R.add("target_codes", target_codes, "target semantic tokens (25 Hz)", "input")
    R.add("target_phones", target_phones, "target phone ids (v2 symbol table)", "input")
    wav_t = torch.from_numpy(wav)[None]
    wav24 = TTSmod.resample(wav_t, REF_SR, 24000, torch.device("cpu"))
    R.add(
        "ref_wav24k",
        wav24[0],
        "ref_wav32k resampled to 24 kHz for the v3 mel (torchaudio.transforms.Resample(32000, 24000), default sinc_interp_hann, width 6, rolloff 0.99)",
        "TTS_infer_pack.TTS.resample",
    )
    R.add(
        "ref_logmel_v3",
        TTSmod.mel_fn(wav24)[0],
        "log-mel of ref_wav24k before norm_spec: n_fft 1024, hop 256, win 1024, 100 mels, 24 kHz, fmin 0, fmax None, center False",
        "TTS_infer_pack.TTS.mel_fn (module.mel_processing.mel_spectrogram_torch)",
    )
    R.add(
        "ref_logmel_v4",
        TTSmod.mel_fn_v4(wav_t)[0],
        "log-mel of ref_wav32k before norm_spec: n_fft 1280, hop 320, win 1280, 100 mels, 32 kHz, fmin 0, fmax None, center False",
        "TTS_infer_pack.TTS.mel_fn_v4",
    )

    # fixed DiT / vocoder inputs
    gi = torch.Generator().manual_seed(5)
    dit_T, dit_lens = 96, torch.tensor([96, 71])
    dit_x = torch.randn(2, 100, dit_T, generator=gi)
    dit_cond = torch.randn(2, 100, dit_T, generator=gi)
    dit_cond[:, :, 40:] = 0  # prompt region first, zeros after (as CFM.inference builds prompt_x)
    dit_text = torch.randn(2, 64, dit_T, generator=gi)
    dit_time = torch.tensor([0.25, 0.75])
    dit_dt = torch.tensor([0.125, 0.25])
    for n, v, m in [
        ("dit_in_x", dit_x, "DiT input x0 [B, 100, T] (noisy mel, channels first)"),
        ("dit_in_cond", dit_cond, "DiT input cond0 [B, 100, T] (prompt mel, zeros after frame 40)"),
        ("dit_in_text", dit_text, "DiT input text0 [B, 64, T] (condition features, channels first)"),
        ("dit_in_time", dit_time, "DiT input time [B]"),
        ("dit_in_dt", dit_dt, "DiT input dt_base_bootstrap [B]"),
        ("dit_in_lens", dit_lens, "DiT input x_lens [B] (key padding mask; item 1 padded after 71)"),
    ]:
        R.add(n, v, m, "input")
    ssl_in = torch.randn(1, 768, 40, generator=gi)
    R.add("ssl_in", ssl_in, "fixed HuBERT-like features [1, 768, 40] (50 Hz) for extract_latent", "input")
    voc_mel = torch.randn(1, 100, 32, generator=gi) * 1.5 - 5.0
    R.add("vocoder_in_mel", voc_mel, "fixed log-mel [1, 100, 32] for the vocoders alone", "input")

    # ---- per version ----------------------------------------------------------------------------
    runs_meta = {}
    quirks = {}
    for version in ("v3", "v4"):
        S = make_tts_self(U, defaults)
        TTS.init_vits_weights(S, str(paths[version]))
        vm = S.vits_model
        assert S.configs.version == version and vm.version == version
        # strict check that the file filled every tensor
        chk = PC.load_sovits_new(str(paths[version]))["weight"]
        res = vm.load_state_dict(chk, strict=False)
        assert not res.missing_keys and not res.unexpected_keys, res
        inv = vm.cfm.estimator.rotary_embed.inv_freq
        fresh = 1.0 / (10000 ** (torch.arange(0, 64, 2).float() / 64))
        quirks.setdefault("rotary_inv_freq_after_loading", {})[version] = {
            "equals_fp16_rounded_formula": bool(torch.equal(inv, fresh.half().float())),
            "equals_float32_formula": bool(torch.equal(inv, fresh)),
        }
        fake_ta = types.SimpleNamespace(
            load=lambda path: (torch.from_numpy(wav)[None].clone(), REF_SR), transforms=TTSmod.torchaudio.transforms
        )
        with patched(TTSmod, "torchaudio", fake_ta):
            spec, _ = TTS._get_ref_spec(S, "ref.wav")
        S.prompt_cache["refer_spec"] = [(spec, None)]
        S.prompt_cache["prompt_semantic"] = prompt_codes
        S.prompt_cache["phones"] = prompt_phones.tolist()
        if version == "v3":
            R.add(
                "ref_spec",
                spec[0],
                "linear magnitude spectrogram of ref_wav32k: n_fft 2048, hop 640, win 2048, center False (ref_enc reads rows :704)",
                "TTS_infer_pack.TTS.TTS._get_ref_spec -> module.mel_processing.spectrogram_torch",
            )
        P = version + "_"
        with torch.no_grad():
            fea_ref, ge = vm.decode_encp(prompt_codes[None, None], prompt_phones[None], spec)
            fea_todo, _ = vm.decode_encp(target_codes[None, None], target_phones[None], spec, ge, 1)
            fea_todo_sp, _ = vm.decode_encp(target_codes[None, None], target_phones[None], spec, ge, 1.25)
        with torch.no_grad():
            R.add(
                P + "extract_latent",
                vm.extract_latent(ssl_in),
                "prompt-token path: ssl_proj (Conv1d k2 s2) then nearest codebook row -> codes [1, 1, 20]",
                "SynthesizerTrnV3.extract_latent",
            )
        R.add(
            P + "ge",
            ge,
            "global speaker embedding from ref_enc(spec[:, :704])",
            "SynthesizerTrnV3.decode_encp (ref_enc)",
        )
        R.add(
            P + "fea_ref",
            fea_ref,
            "decode_encp(prompt_codes, prompt_phones, ref_spec): wns1 output [1, 64, T]",
            "SynthesizerTrnV3.decode_encp",
        )
        R.add(
            P + "fea_todo",
            fea_todo,
            "decode_encp(target_codes, target_phones, ref_spec, ge, speed=1)",
            "SynthesizerTrnV3.decode_encp",
        )
        R.add(P + "fea_todo_speed1.25", fea_todo_sp, "decode_encp(..., ge, speed=1.25)", "SynthesizerTrnV3.decode_encp")

        # one DiT forward
        with torch.inference_mode():
            out_d, text_emb, dt_emb = vm.cfm.estimator(
                dit_x, dit_cond, dit_lens, dit_time, dit_dt, dit_text, use_grad_ckpt=False, infer=True
            )
        R.add(
            P + "dit_out",
            out_d,
            "DiT(x0, cond0, x_lens, time, dt, text0, infer=True)[0]: velocity [B, T, 100] (time-major)",
            "f5_tts DiT.forward",
        )
        R.add(
            P + "dit_text_embed",
            text_emb,
            "DiT(...)[1]: text_embed [B, T, 64] after TextEmbedding (pos table + ConvNeXtV2 blocks)",
            "f5_tts DiT.forward",
        )
        R.add(
            P + "dit_dt_embed",
            dt_emb,
            "DiT(...)[2]: d_embed(dt) [B, 128] (added to time_embed(time))",
            "f5_tts DiT.forward",
        )

        # CFM.inference alone, reference prompt + first target frames
        mel_full = TTSmod.norm_spec(TTSmod.mel_fn(wav24) if version == "v3" else TTSmod.mel_fn_v4(wav_t))
        P_len, X_len = 60, 120
        T_min = min(mel_full.shape[2], fea_ref.shape[2])
        cfm_prompt = mel_full[:, :, T_min - P_len : T_min]
        cfm_mu = torch.cat([fea_ref[:, :, T_min - P_len : T_min], fea_todo[:, :, :X_len]], 2).transpose(2, 1)
        cfm_lens = torch.LongTensor([cfm_mu.size(1)])
        R.add(
            P + "cfm_in_mu",
            cfm_mu,
            "CFM.inference mu [1, T, 64]: fea_ref frames T_min-60..T_min then fea_todo frames 0..120 (time-major)",
            "input (from decode_encp)",
        )
        R.add(
            P + "cfm_in_prompt",
            cfm_prompt,
            "CFM.inference prompt [1, 100, 60]: norm_spec(ref log-mel) frames T_min-60..T_min",
            "input (TTS.norm_spec of mel_fn / mel_fn_v4)",
        )
        for steps in (4, 32):
            noise = []
            torch.manual_seed(CFM_SEED)
            with record_randn(noise):
                y = vm.cfm.inference(cfm_mu, cfm_lens, cfm_prompt, steps, inference_cfg_rate=0)
            assert len(noise) == 1
            if steps == 4:
                R.add(
                    P + "cfm_noise",
                    noise[0],
                    f"the tensor CFM.inference drew: torch.manual_seed({CFM_SEED}); torch.randn([1, 100, 180]) (temperature 1)",
                    "torch.randn inside CFM.inference",
                )
            else:
                assert torch.equal(noise[0], torch.from_numpy(R.arrays[P + "cfm_noise"]))
            R.add(
                P + f"cfm_out_steps{steps}",
                y,
                f"CFM.inference(mu, [180], prompt, n_timesteps={steps}, inference_cfg_rate=0): [1, 100, 180], first 60 frames zero",
                "module.models.CFM.inference",
            )

        # full synthesis (S.vocoder / S.vocoder_configs were set by TTS.init_vocoder)
        for rname, steps, speed, seed in SYNTH_RUNS:
            noise = []
            captured = {}
            orig_voc = S.vocoder

            def voc_spy(x, _orig=orig_voc, captured=captured):
                captured["mel"] = x.detach().clone()
                return _orig(x)

            S.vocoder = voc_spy
            torch.manual_seed(seed)
            with record_randn(noise), torch.no_grad():
                audio = TTS.using_vocoder_synthesis(
                    S, target_codes[None, None], target_phones[None], speed=speed, sample_steps=steps
                )
            S.vocoder = orig_voc
            R.add(
                P + f"synth_{rname}_mel",
                captured["mel"],
                f"denorm_spec(concatenated CFM chunks): the vocoder input, sample_steps={steps} speed={speed} seed={seed}",
                "TTS.using_vocoder_synthesis",
            )
            keep_wave = rname == "s8"  # the other runs keep their vocoder input only (size)
            if keep_wave:
                R.add(
                    P + f"synth_{rname}_wav",
                    audio,
                    f"waveform = vocoder(mel)[0][0], sample_steps={steps} speed={speed} seed={seed}",
                    "TTS.using_vocoder_synthesis",
                )
            runs_meta[P + rname] = {
                "sample_steps": steps,
                "speed": speed,
                "seed": seed,
                "noise_shapes": [list(n.shape) for n in noise],
                "noise_sha256_float32_le": [
                    hashlib.sha256(n.numpy().astype("<f4").tobytes()).hexdigest() for n in noise
                ],
                "n_chunks": len(noise),
                "wav_samples": int(audio.numel()),
                "wav_stored": keep_wave,
                "vocoder_configs": dict(S.vocoder_configs),
                "wav_peak": float(audio.abs().max()),
                "wav_fraction_at_clamp": float((audio.abs() >= 1).float().mean()),
            }

        # vocoder alone
        with torch.inference_mode():
            vw = S.vocoder(voc_mel)
        R.add(
            P + "vocoder_out",
            vw,
            (
                "BigVGAN (tiny, weight norm removed) on vocoder_in_mel: [1, 1, 32*256]"
                if version == "v3"
                else "v4 Generator (tiny, plain weights) on vocoder_in_mel: [1, 1, 32*480]"
            ),
            "BigVGAN.forward" if version == "v3" else "module.models.Generator.forward",
        )

        # LoRA fine-tune, merged by the loader
        SL = make_tts_self(U, defaults)
        TTS.init_vits_weights(SL, str(paths[version + "_lora"]))
        lm = SL.vits_model
        assert SL.configs.version == version
        assert not any("lora" in k for k in lm.state_dict())
        torch.manual_seed(CFM_SEED)
        noise = []
        with record_randn(noise):
            yl = lm.cfm.inference(cfm_mu, cfm_lens, cfm_prompt, 4, inference_cfg_rate=0)
        assert torch.equal(noise[0], torch.from_numpy(R.arrays[P + "cfm_noise"]))
        R.add(
            P + "lora_cfm_out_steps4",
            yl,
            "LoRA-merged model: CFM.inference on the same mu/prompt/seed as cfm_out_steps4",
            "TTS.init_vits_weights (peft merge_and_unload) + CFM.inference",
        )
        R.add(
            P + "lora_merged_to_q_block0",
            lm.cfm.estimator.transformer_blocks[0].attn.to_q.weight,
            "merged weight of transformer_blocks.0.attn.to_q: W + (alpha/r) B A with alpha = r",
            "peft merge_and_unload",
        )
        with torch.no_grad():
            lfr, lge = lm.decode_encp(prompt_codes[None, None], prompt_phones[None], spec)
        R.add(
            P + "lora_ge",
            lge,
            "LoRA model: ge of decode_encp(prompt_codes, prompt_phones, ref_spec) (its ref_enc comes from the LoRA file)",
            "SynthesizerTrnV3.decode_encp",
        )
        R.add(
            P + "lora_fea_ref_first8",
            lfr[:, :, :8],
            "LoRA model: first 8 frames of fea_ref (bridge/wns1 come from the LoRA file)",
            "SynthesizerTrnV3.decode_encp",
        )

    manifest["synthesis_runs"] = runs_meta
    manifest["quirks"] = quirks
    manifest["arrays"] = R.meta
    write_npz(out / "expected.npz", R.arrays)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=False) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    print("wrote", out)


if __name__ == "__main__":
    main()
