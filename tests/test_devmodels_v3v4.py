"""v3/v4 development models, model paths and downloads: random weights in the official formats
(devmodels/mel_sovits.py, devmodels/mel_vocoders.py) read back by the real loaders, the v3/v4 layout
of the model directory (model_paths.py) and what gsv-download fetches (network mocked)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import torch

from dora_gpt_sovits import download
from dora_gpt_sovits.checkpoint_io import CheckpointError, read_checkpoint
from dora_gpt_sovits.devmodels import bundle
from dora_gpt_sovits.devmodels.mel_sovits import (
    LORA_FULL_PREFIXES,
    official_config,
    official_dims,
    write_random_lora,
    write_random_mel_sovits,
)
from dora_gpt_sovits.devmodels.mel_vocoders import bigvgan_config, bigvgan_file_key, write_random_mel_vocoder
from dora_gpt_sovits.model_paths import BIGVGAN_FILES, OFFICIAL_FILES, ModelsMissing, resolve
from dora_gpt_sovits.sovits.bigvgan import BigVGAN, BigVGANConfig
from dora_gpt_sovits.sovits.cfm import sample_mel
from dora_gpt_sovits.sovits.loader import WEIGHT_NORMED, load_sovits
from dora_gpt_sovits.sovits.lora import PEFT_PREFIX
from dora_gpt_sovits.sovits.mel_synthesizer import MelSynthesizer
from dora_gpt_sovits.sovits.mel_vocoders import bigvgan_key, load_mel_vocoder

pytestmark = pytest.mark.usefixtures("torch_single_thread")

VERSIONS = ("v3", "v4")
LORA_RANK = 4
# BigVGAN's config.json keys that the generator reads (the release holds training keys besides).
GENERATOR_KEYS = {
    "resblock",
    "upsample_rates",
    "upsample_kernel_sizes",
    "upsample_initial_channel",
    "resblock_kernel_sizes",
    "resblock_dilation_sizes",
    "use_tanh_at_final",
    "use_bias_at_final",
    "activation",
    "snake_logscale",
    "num_mels",
    "sampling_rate",
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """Tiny v3 and v4 bases, LoRA fine-tunes of them and their vocoders, written once."""
    root = tmp_path_factory.mktemp("v3v4")
    files = {}
    for v in VERSIONS:
        files[v] = root / f"{v}.pth"
        write_random_mel_sovits(files[v], v, "tiny", seed=0)
        files[f"{v}-lora"] = root / f"{v}-lora.pth"
        write_random_lora(files[f"{v}-lora"], v, "tiny", rank=LORA_RANK, seed=1)
        files[f"{v}-vocoder"] = root / ("bigvgan" if v == "v3" else "vocoder.pth")
        write_random_mel_vocoder(files[f"{v}-vocoder"], v, "tiny", seed=0)
    return files


# --- SoVITS v3/v4 files -------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_tiny_base_format(tiny, version):
    raw = read_checkpoint(tiny[version])
    assert raw.header_tag == (b"02" if version == "v3" else None)  # v4: a plain zip, as upstream's base
    assert set(raw.content) == {"weight", "config", "info"}
    weight = raw.content["weight"]
    assert all(t.dtype == torch.float16 for t in weight.values())
    assert raw.content["config"]["model"]["version"] == version
    assert "linear_mel.weight" in weight and "quantizer.vq.layers.0._codebook.embed_avg" in weight
    assert "cfm.estimator.rotary_embed.inv_freq" in weight and "bridge.0.weight" in weight
    normed = [k[: -len("_v")] for k in weight if k.endswith(".weight_v")]
    assert normed and all(WEIGHT_NORMED.match(k) and k.startswith("wns1.enc.") for k in normed)
    assert not any(WEIGHT_NORMED.match(k) for k in weight)  # no normed conv stored as a plain weight


@pytest.mark.parametrize("version", VERSIONS)
def test_tiny_base_loads_and_makes_a_finite_audible_mel(tiny, version):
    model = load_sovits(tiny[version], expected_version=version)
    assert isinstance(model, MelSynthesizer)
    assert model.version.model_version == version and not model.version.is_lora
    assert model.dims == official_dims("tiny") and model.config == official_config(version, "tiny")
    g = torch.Generator().manual_seed(0)
    ge = model.speaker_vector(torch.rand(1, 1025, 60, generator=g) * 5)
    features = model.features(torch.randint(0, 1024, (1, 1, 12), generator=g), torch.randint(0, 732, (1, 8)), ge)
    torch.manual_seed(0)
    mel = sample_mel(model.estimator, features.transpose(1, 2), torch.zeros(1, 100, 5), 4)
    vocoder = load_mel_vocoder(version, tiny[f"{version}-vocoder"])
    wav = vocoder(((mel[..., 5:] + 1) / 2 * 14 - 12).clamp(-12, 2))  # de-normalised log-mel, speech-like range
    assert torch.isfinite(features).all() and torch.isfinite(mel).all() and torch.isfinite(wav).all()
    assert features.std() > 1e-2 and mel[..., 5:].std() > 0.1
    assert 0.01 < float(wav.std()) < 0.9


def test_official_sizes_match_the_released_files():
    """Full size = upstream's: s2Gv3.pth / s2Gv4.pth are 734 MiB of fp16, BigVGAN 112 M weights (215 MiB fp16)."""
    with torch.device("meta"):
        sovits = MelSynthesizer(official_config("v3", "full"), official_dims("full")).state_dict()
        vocoder = BigVGAN(BigVGANConfig.from_dict(bigvgan_config("full"), "full")).state_dict()
    assert 730 < sum(t.numel() for t in sovits.values()) * 2 / 2**20 < 736
    assert 112.0e6 < sum(t.numel() for t in vocoder.values()) < 112.8e6
    dit = official_dims("full").dit
    assert (dit.dim, dit.depth, dit.heads, dit.ff_mult, dit.text_dim, dit.conv_layers) == (1024, 22, 16, 2, 512, 4)


def test_v3_loaded_as_v4_is_refused_in_one_line(tiny):
    for path, claimed, expected in ((tiny["v3"], "v3", "v4"), (tiny["v4"], "v4", "v3")):
        with pytest.raises(CheckpointError) as e:
            load_sovits(path, expected_version=expected)
        message = str(e.value)
        assert "\n" not in message and f"SoVITS {claimed} model" in message and f"not {expected}" in message


@pytest.mark.parametrize("version", VERSIONS)
def test_lora_format(tiny, version):
    raw = read_checkpoint(tiny[f"{version}-lora"])
    assert raw.header_tag == (b"03" if version == "v3" else b"04")
    assert raw.content["lora_rank"] == LORA_RANK
    weight = raw.content["weight"]
    adapters = [k for k in weight if k.startswith(PEFT_PREFIX)]
    depth = official_dims("tiny").dit.depth
    assert len(adapters) == depth * 4 * 2
    a = weight[f"{PEFT_PREFIX}estimator.transformer_blocks.0.attn.to_q.lora_A.default.weight"]
    b = weight[f"{PEFT_PREFIX}estimator.transformer_blocks.0.attn.to_out.0.lora_B.default.weight"]
    assert a.shape[0] == LORA_RANK and b.shape[1] == LORA_RANK
    full = [k for k in weight if not k.startswith(PEFT_PREFIX)]
    assert full and all(k.startswith(LORA_FULL_PREFIXES) for k in full)
    assert any(k.startswith("wns1.enc.") and k.endswith("weight_g") for k in full)


@pytest.mark.parametrize("version", VERSIONS)
def test_lora_loads_with_its_base(tiny, version):
    base = load_sovits(tiny[version], expected_version=version)
    tuned = load_sovits(tiny[f"{version}-lora"], expected_version=version, lora_base=tiny[version])
    assert tuned.version.is_lora and tuned.version.model_version == version
    raw = read_checkpoint(tiny[f"{version}-lora"]).content["weight"]
    stem = f"{PEFT_PREFIX}estimator.transformer_blocks.1.attn.to_v"
    delta = raw[f"{stem}.lora_B.default.weight"].float() @ raw[f"{stem}.lora_A.default.weight"].float()
    block = "transformer_blocks.1.attn.to_v.weight"
    merged, original = tuned.estimator.state_dict()[block], base.estimator.state_dict()[block]
    torch.testing.assert_close(merged, original + delta, rtol=1e-3, atol=1e-3)
    assert not torch.equal(tuned.bridge[0].weight, base.bridge[0].weight)  # trained in full: the file's copy
    frozen = base.enc_p.state_dict()  # not trained by a LoRA run: the base's weights
    assert all(torch.equal(t, frozen[k]) for k, t in tuned.enc_p.state_dict().items())


@pytest.mark.parametrize("version", VERSIONS)
def test_lora_without_base_names_what_is_missing(tiny, version, tmp_path):
    for base in (None, tmp_path / "absent.pth"):
        with pytest.raises(CheckpointError) as e:
            load_sovits(tiny[f"{version}-lora"], expected_version=version, lora_base=base)
        message = str(e.value)
        official = "s2Gv3.pth" if version == "v3" else "gsv-v4-pretrained/s2Gv4.pth"
        assert "\n" not in message and official in message and "GSV_SOVITS_BASE_PATH" in message


# --- vocoders -----------------------------------------------------------------------------------


def test_bigvgan_folder_as_nvidia_releases_it(tiny):
    folder = tiny["v3-vocoder"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(BIGVGAN_FILES)
    config = json.loads((folder / "config.json").read_text())
    full = bigvgan_config("full")
    assert set(config) == set(full) and GENERATOR_KEYS <= set(config)
    assert {k: v for k, v in config.items() if k != "upsample_initial_channel"} == {
        k: v for k, v in full.items() if k != "upsample_initial_channel"
    }
    assert full["upsample_initial_channel"] == 1536 and full["snake_logscale"] and not full["use_tanh_at_final"]
    content = torch.load(folder / "bigvgan_generator.pt", weights_only=True)
    assert set(content) == {"generator"}
    state = content["generator"]
    for key in (
        "conv_pre.weight_g",
        "ups.0.0.weight_v",
        "resblocks.0.convs1.0.weight_g",
        "resblocks.0.convs2.2.weight_v",
        "resblocks.0.activations.0.act.alpha",
        "resblocks.0.activations.5.act.beta",
        "activation_post.upsample.filter",
        "activation_post.downsample.lowpass.filter",
        "conv_post.weight_v",
    ):
        assert key in state, key
    assert "conv_post.bias" not in state and not any(k.endswith(".weight") for k in state)
    assert state["activation_post.upsample.filter"].shape == (1, 1, 12)
    vocoder = load_mel_vocoder("v3", folder)
    assert (vocoder.sample_rate, vocoder.hop_length) == (24000, 256)


def test_bigvgan_file_names_round_trip():
    with torch.device("meta"):
        names = BigVGAN(BigVGANConfig.from_dict(bigvgan_config("tiny"), "tiny")).state_dict()
    assert all(bigvgan_key(bigvgan_file_key(k)) == k for k in names)


def test_v4_vocoder_is_a_plain_state_dict(tiny):
    state = torch.load(tiny["v4-vocoder"], weights_only=True)
    assert all(isinstance(v, torch.Tensor) and v.dtype == torch.float32 for v in state.values())
    assert "conv_post.bias" in state and not any("weight_g" in k or "weight_v" in k for k in state)
    assert state["conv_pre.weight"].shape == (64, 100, 7)  # tiny: 64 wide (the release: 512)
    vocoder = load_mel_vocoder("v4", tiny["v4-vocoder"])
    assert (vocoder.sample_rate, vocoder.hop_length) == (48000, 480)


# --- model paths --------------------------------------------------------------------------------


def fake_bundle(root: Path, version: str) -> Path:
    """Empty files in the official layout (model_paths only checks that they exist)."""
    files = OFFICIAL_FILES[version]
    for part, name in files.items():
        target = root / name
        if part == "vocoder" and version == "v3":
            target.mkdir(parents=True, exist_ok=True)
            for f in BIGVGAN_FILES:
                (target / f).touch()
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
    for folder, names in (
        ("chinese-roberta-wwm-ext-large", ("config.json", "vocab.txt", "pytorch_model.bin")),
        ("chinese-hubert-base", ("config.json", "pytorch_model.bin")),
    ):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for n in names:
            (root / folder / n).touch()
    return root


NEED_ALL = ("gpt", "sovits", "bert", "hubert", "sv", "vocoder", "sovits_base")


def test_model_paths_resolve_v3_and_v4(tmp_path):
    v3 = resolve({"GSV_MODEL_DIR": str(fake_bundle(tmp_path / "a", "v3")), "GSV_VERSION": "v3"}, need=NEED_ALL)
    assert v3.gpt.name == "s1v3.ckpt" and v3.sovits == tmp_path / "a" / "s2Gv3.pth" and v3.sv is None
    assert v3.vocoder == tmp_path / "a" / "models--nvidia--bigvgan_v2_24khz_100band_256x"
    assert v3.sovits_base == v3.sovits
    v4 = resolve({"GSV_MODEL_DIR": str(fake_bundle(tmp_path / "b", "v4")), "GSV_VERSION": "v4"}, need=NEED_ALL)
    assert v4.sovits == tmp_path / "b" / "gsv-v4-pretrained" / "s2Gv4.pth"
    assert v4.vocoder == tmp_path / "b" / "gsv-v4-pretrained" / "vocoder.pth" and v4.sovits_base == v4.sovits
    v2 = resolve({"GSV_MODEL_DIR": str(tmp_path / "c"), "GSV_VERSION": "v2"}, need=("vocoder", "sovits_base"))
    assert v2.vocoder is None and v2.sovits_base is None  # no such parts: never missing


def test_model_paths_overrides(tmp_path):
    root = fake_bundle(tmp_path / "m", "v4")
    lora, base, vocoder = tmp_path / "lora.pth", tmp_path / "base.pth", tmp_path / "voc.pth"
    for f in (lora, base, vocoder):
        f.touch()
    env = {
        "GSV_MODEL_DIR": str(root),
        "GSV_VERSION": "v4",
        "GSV_SOVITS_PATH": str(lora),
        "GSV_SOVITS_BASE_PATH": str(base),
        "GSV_VOCODER_PATH": str(vocoder),
    }
    paths = resolve(env, need=NEED_ALL)
    assert (paths.sovits, paths.sovits_base, paths.vocoder) == (lora, base, vocoder)
    # a LoRA in GSV_SOVITS_PATH with no base override: the directory's official file is its base
    del env["GSV_SOVITS_BASE_PATH"]
    assert resolve(env).sovits_base == root / "gsv-v4-pretrained" / "s2Gv4.pth"


def test_missing_vocoder_folder_and_config_are_named(tmp_path):
    root = fake_bundle(tmp_path / "m", "v3")
    folder = root / "models--nvidia--bigvgan_v2_24khz_100band_256x"
    env = {"GSV_MODEL_DIR": str(root), "GSV_VERSION": "v3"}
    (folder / "config.json").unlink()
    with pytest.raises(ModelsMissing) as e:
        resolve(env, need=("vocoder",))
    message = str(e.value)
    assert "\n" not in message and f"{folder}/config.json" in message
    assert f"{folder}/bigvgan_generator.pt" not in message
    assert "GSV_VOCODER_PATH" in message and "gsv-download --version v3" in message
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()
    with pytest.raises(ModelsMissing) as e:
        resolve(env, need=("gpt", "vocoder"))
    assert f"v3 vocoder folder {folder} missing" in str(e.value) and "config.json" in str(e.value)
    folder.touch()  # a file where the folder should be
    with pytest.raises(ModelsMissing, match="is a file, not a folder"):
        resolve(env, need=("vocoder",))


def test_missing_v4_vocoder_and_lora_base_are_named(tmp_path):
    root = fake_bundle(tmp_path / "m", "v4")
    (root / "gsv-v4-pretrained" / "vocoder.pth").unlink()
    env = {"GSV_MODEL_DIR": str(root), "GSV_VERSION": "v4", "GSV_SOVITS_BASE_PATH": str(tmp_path / "none.pth")}
    with pytest.raises(ModelsMissing) as e:
        resolve(env, need=("sovits", "vocoder", "sovits_base"))
    message = str(e.value)
    assert f"v4 vocoder {root}/gsv-v4-pretrained/vocoder.pth (GSV_VOCODER_PATH)" in message
    assert f"{tmp_path}/none.pth (GSV_SOVITS_BASE_PATH)" in message and "gsv-v4-pretrained/s2Gv4.pth (" not in message


# --- gsv-download -------------------------------------------------------------------------------


def test_download_lists_the_v3_and_v4_files():
    v3, v4 = download.files_for("v3"), download.files_for("v4")
    assert v3[:4] == [
        "s1v3.ckpt",
        "s2Gv3.pth",
        "models--nvidia--bigvgan_v2_24khz_100band_256x/config.json",
        "models--nvidia--bigvgan_v2_24khz_100band_256x/bigvgan_generator.pt",
    ]
    assert v4[:3] == ["s1v3.ckpt", "gsv-v4-pretrained/s2Gv4.pth", "gsv-v4-pretrained/vocoder.pth"]
    for files in (v3, v4):
        assert "chinese-hubert-base/pytorch_model.bin" in files and len(files) == len(set(files))


@pytest.mark.parametrize("version", VERSIONS)
def test_download_fetches_every_file_into_the_layout(tmp_path, monkeypatch, version, capsys):
    fetched = []

    def hf_hub_download(repo, name, local_dir):  # the network, mocked: writes the file where hf would
        fetched.append((repo, name))
        target = Path(local_dir) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"x")
        return str(target)

    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(hf_hub_download=hf_hub_download))
    (tmp_path / "s1v3.ckpt").write_bytes(b"already here")
    download.main(["--version", version, "--model-dir", str(tmp_path)])
    names = [n for _, n in fetched]
    assert {r for r, _ in fetched} == {"lj1995/GPT-SoVITS"}
    assert "s1v3.ckpt" not in names and names == download.files_for(version)[1:]
    paths = resolve({"GSV_MODEL_DIR": str(tmp_path), "GSV_VERSION": version}, need=("gpt", "sovits", "vocoder"))
    assert paths.vocoder.exists()
    assert f"GSV_VERSION={version}" in capsys.readouterr().out


def test_download_failure_is_one_line(tmp_path, monkeypatch):
    def offline(repo, name, local_dir):
        raise OSError("no network\nmore detail")

    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(hf_hub_download=offline))
    with pytest.raises(SystemExit) as e:
        download.download("v3", tmp_path)
    assert "s1v3.ckpt" in str(e.value) and "no network" in str(e.value) and "more detail" not in str(e.value)


# --- gsv-devmodel layout ------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_bundle_layout(tmp_path, monkeypatch, version):
    """The directory is what OFFICIAL_FILES says (slow writers of GPT/BERT/HuBERT stubbed out)."""

    def stub_gpt(path, **kwargs):
        Path(path).write_bytes(b"gpt")

    def stub_folder(names):
        def write(folder, size):
            Path(folder).mkdir(parents=True, exist_ok=True)
            for n in names:
                (Path(folder) / n).write_bytes(b"x")

        return write

    monkeypatch.setattr(bundle, "write_random_gpt", stub_gpt)
    monkeypatch.setattr(bundle, "write_random_roberta", stub_folder(("config.json", "vocab.txt", "pytorch_model.bin")))
    monkeypatch.setattr(bundle, "write_random_hubert", stub_folder(("config.json", "pytorch_model.bin")))
    out = bundle.build_bundle(tmp_path / "m", "tiny", version, lora_rank=LORA_RANK)
    paths = resolve({"GSV_MODEL_DIR": str(out), "GSV_VERSION": version}, need=NEED_ALL)
    assert paths.development
    assert load_sovits(paths.sovits, expected_version=version).version.model_version == version
    load_mel_vocoder(version, paths.vocoder)
    lora = out / f"SoVITS_weights_{version}" / f"dev_e1_s1_l{LORA_RANK}.pth"
    assert load_sovits(lora, expected_version=version, lora_base=paths.sovits_base).version.is_lora


def test_bundle_refuses_lora_before_v3(tmp_path):
    with pytest.raises(ValueError, match="v3 and v4 only"):
        bundle.build_bundle(tmp_path, "tiny", "v2", lora_rank=4)


# --- full size (minutes and GBs: slow) ----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("version", VERSIONS)
def test_full_size_files_load(tmp_path, version):
    path = tmp_path / "s2.pth"
    write_random_mel_sovits(path, version, "full")
    assert 725 << 20 < path.stat().st_size < 745 << 20  # the official files are 734 MiB
    model = load_sovits(path, expected_version=version)
    assert model.dims == official_dims("full")
    del model
    vocoder_path = tmp_path / ("bigvgan" if version == "v3" else "vocoder.pth")
    write_random_mel_vocoder(vocoder_path, version, "full")
    vocoder = load_mel_vocoder(version, vocoder_path)
    wav = vocoder(torch.full((1, 100, 8), -5.0) + torch.randn(1, 100, 8))
    assert torch.isfinite(wav).all() and wav.std() > 1e-3
