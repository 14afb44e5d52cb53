"""Runs upstream GPT-SoVITS's own inference code on request: the side-by-side half of the benchmark.

Started by :mod:`dora_gpt_sovits.benchmark.upstream` as ``python upstream_worker.py`` with
``PYTHONPATH`` pointing into an upstream checkout (``<checkout>/GPT_SoVITS`` and ``<checkout>``). It
imports nothing of this project, only torch and upstream's modules, so it also runs under an
interpreter that has upstream's requirements instead of ours (``--upstream-python``).

Upstream code used, unchanged: ``AR.models.t2s_model.Text2SemanticDecoder`` (weights loaded the way
its Lightning wrapper does, decoding with ``infer_panel_naive``, what ``TTS_infer_pack/TTS.py`` calls
for batch size 1) and ``module.models.SynthesizerTrn`` (built and loaded as ``TTS.init_vits_weights``
does for v1/v2/v2Pro/v2ProPlus, decoding with ``.decode``).

For v3/v4 (``model_version`` v3 or v4) the SoVITS side is upstream's ``TTS_infer_pack/TTS.py`` itself:
``TTS.init_vits_weights`` (``SynthesizerTrnV3``, LoRA merged by peft, ``TTS.init_vocoder``: BigVGAN for
v3, the v4 ``Generator``), ``TTS._get_ref_spec`` on the reference recording and, per segment,
``TTS.using_vocoder_synthesis(tokens, phones, speed=1, sample_steps=N)`` after
``torch.manual_seed(seed)`` (its flow-matching noise comes from the global stream). These methods run
on a small stand-in object and TTS.py is imported with stand-ins for its heavy imports, exactly as
``scripts/record_upstream_v3v4.py`` (which recorded the parity fixtures) does: its helpers are
imported from that script, not copied (see :func:`recording_script`).

Upstream's BERT step is the one stage not run through its own module: ``TextPreprocessor`` imports
the whole text frontend (jieba, g2pW, a language detector fetched at run time). :meth:`Upstream.bert`
makes the same ``transformers`` calls its ``get_bert_feature`` makes (model loaded as
``TTS.init_bert_weights`` does; the full encoder with every hidden state, the third-from-last layer
spread over phones), for the timing; zeros for non-Chinese runs, as its ``get_bert_inf``.

Protocol: one JSON command per line on stdin, one JSON reply per line on the original stdout.
Everything upstream prints (its tqdm bar included) goes to stderr.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tempfile
import time
import traceback
import types
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
FLOW_MATCHING = ("v3", "v4")
# Where TTS.init_vocoder reads the vocoders from (relative to TTS.py's ``now_dir``).
VOCODER_PATHS = {
    "v3": "GPT_SoVITS/pretrained_models/models--nvidia--bigvgan_v2_24khz_100band_256x",
    "v4": "GPT_SoVITS/pretrained_models/gsv-v4-pretrained/vocoder.pth",
}
RECORDING_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "record_upstream_v3v4.py"


def recording_script() -> types.ModuleType:
    """scripts/record_upstream_v3v4.py as a module: its ``import_upstream`` (TTS.py with stand-ins for
    the imports whose code is not run), ``make_tts_self`` (the stand-in ``self``), ``patched`` and the
    tiny-model builders of the fixture files. It imports only numpy and torch at the top."""
    if "record_upstream_v3v4" not in sys.modules:
        if not RECORDING_SCRIPT.is_file():
            raise FileNotFoundError(f"{RECORDING_SCRIPT}: needed for the v3/v4 side by side (run from a checkout)")
        spec = importlib.util.spec_from_file_location("record_upstream_v3v4", RECORDING_SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return sys.modules["record_upstream_v3v4"]


def read_audio(path: str) -> tuple[torch.Tensor, int]:
    """What ``torchaudio.load`` returns ([channels, samples] float32, rate); torchaudio's own loader
    needs its compiled extension (see the recording script's notes), soundfile decodes the same."""
    import soundfile

    data, rate = soundfile.read(path, dtype="float32", always_2d=True)
    return torch.from_numpy(data.T.copy()), rate


def reset_peak_rss() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mib() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


class Upstream:
    def __init__(self) -> None:
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.t2s = None
        self.vits = None
        self.is_pro = False
        self.inputs: dict = {}
        self.tts = None  # v3/v4: the stand-in ``self`` upstream's TTS methods run on
        self.tts_class = None

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # -- commands ---------------------------------------------------------------------------------

    def load(self, cmd: dict) -> dict:
        torch.set_num_threads(int(cmd["threads"]))
        self.device = torch.device(cmd["device"])
        self.dtype = DTYPES[cmd["dtype"]]
        self.inputs = torch.load(cmd["inputs_path"], map_location=self.device, weights_only=True)
        load_s, t2s_report = {}, {}
        started = time.perf_counter()
        if cmd.get("gpt_path"):  # first: the v3/v4 stand-ins replace the AR package's name (see load_tts)
            t2s_report = self.load_t2s(cmd["gpt_path"])
            load_s["gpt"] = round(time.perf_counter() - started, 3)
        started = time.perf_counter()
        if cmd["model_version"] in FLOW_MATCHING:
            vits_report = self.load_tts(cmd)
        else:
            vits_report = self.load_vits(cmd["sovits_path"], cmd["model_version"])
        load_s["sovits"] = round(time.perf_counter() - started, 3)
        started = time.perf_counter()
        if cmd.get("bert_path"):
            self.load_bert(cmd["bert_path"])
            load_s["bert"] = round(time.perf_counter() - started, 3)
        return {
            "load_s": load_s,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            **t2s_report,
            **vits_report,
        }

    def load_t2s(self, path: str) -> dict:
        from AR.models.t2s_model import Text2SemanticDecoder

        dict_s1 = torch.load(path, map_location="cpu", weights_only=False)  # as TTS.init_t2s_weights
        # Text2SemanticLightningModule holds the decoder as ``self.model`` with top_k = 3.
        model = Text2SemanticDecoder(config=dict_s1["config"], top_k=3)
        prefix = "model."
        weights = {k[len(prefix) :]: v for k, v in dict_s1["weight"].items() if k.startswith(prefix)}
        result = model.load_state_dict(weights, strict=True)
        self.t2s = model.to(self.device, self.dtype).eval()
        return {"gpt_missing_keys": list(result.missing_keys), "gpt_unexpected_keys": list(result.unexpected_keys)}

    def load_vits(self, path: str, model_version: str) -> dict:
        from module.models import SynthesizerTrn
        from process_ckpt import load_sovits_new

        dict_s2 = load_sovits_new(path)
        hps = dict_s2["config"]
        hps["model"]["semantic_frame_rate"] = "25hz"
        # TTS.init_vits_weights: v1 if the phone table has 322 rows, v2 symbols otherwise; Pro keeps its name.
        version = "v1" if dict_s2["weight"]["enc_p.text_embedding.weight"].shape[0] == 322 else "v2"
        hps["model"]["version"] = model_version if "Pro" in model_version else version
        self.is_pro = "Pro" in model_version
        model = SynthesizerTrn(
            hps["data"]["filter_length"] // 2 + 1,
            hps["train"]["segment_size"] // hps["data"]["hop_length"],
            n_speakers=hps["data"]["n_speakers"],
            **hps["model"],
        )
        result = model.load_state_dict(dict_s2["weight"], strict=False)
        self.vits = model.to(self.device, self.dtype).eval()
        missing = [k for k in result.missing_keys if not k.startswith("enc_q.")]
        return {"sovits_missing_keys": missing, "sovits_unexpected_keys": list(result.unexpected_keys)}

    def load_tts(self, cmd: dict) -> dict:
        """v3/v4: upstream's TTS.init_vits_weights (+ init_vocoder) and _get_ref_spec on a stand-in ``self``.

        ``cmd``: sovits_path, model_version, vocoder_path, ref_audio, checkout; sovits_base_path (the
        base of a LoRA fine-tune); tiny_fixture (the test fixtures' tiny shapes, built as the recording
        script built them)."""
        rec = recording_script()
        version, path = cmd["model_version"], cmd["sovits_path"]
        real = {name: module for name, module in sys.modules.items() if name == "AR" or name.startswith("AR.")}
        up = rec.import_upstream(Path(cmd["checkout"]))
        sys.modules.update(real)  # keep the real AR package (the GPT above) beside TTS.py's stand-in
        tts_module, pc = up.TTS, up.process_ckpt
        if cmd.get("tiny_fixture"):
            tts_module.SynthesizerTrnV3 = rec.make_tiny_builder(up)
            tts_module.Generator = lambda **kw: up.models.Generator(
                **{**kw, "upsample_initial_channel": rec.V4_VOCODER_CH}
            )
        # TTS.init_vocoder reads the vocoder at fixed paths under now_dir: link the given one there.
        root = Path(tempfile.mkdtemp(prefix="upstream-v3v4-"))
        link = root / VOCODER_PATHS[version]
        link.parent.mkdir(parents=True)
        os.symlink(Path(cmd["vocoder_path"]).resolve(), link)
        tts_module.now_dir = str(root)
        detected = list(pc.get_sovits_version_from_path_fast(path))
        registered = False
        if detected[1] != version:
            with open(path, "rb") as f:
                untagged = f.read(2) == b"PK"
            if not untagged:
                raise ValueError(f"{path}: upstream reads this file as {detected[1]}, not {version}")
            # An untagged base (a v4 base that is not the official file): upstream knows the official
            # ones by md5 only, so it is told, as the recording script tells it.
            pc.hash_pretrained_dict[pc.get_hash_from_file(path)] = ["v2", version, False]
            registered = True
        tts = rec.make_tts_self(up, {version: {"vits_weights_path": cmd.get("sovits_base_path") or path}})
        tts.configs.device = self.device
        tts.configs.is_half = self.dtype == torch.float16
        tts.precision = self.dtype
        self.tts_class = tts_module.TTS
        self.tts_class.init_vits_weights(tts, path)
        if tts.configs.version != version:
            raise ValueError(f"{path}: upstream loaded it as {tts.configs.version}, not {version}")
        fake_torchaudio = types.SimpleNamespace(load=read_audio, transforms=tts_module.torchaudio.transforms)
        with rec.patched(tts_module, "torchaudio", fake_torchaudio):
            spec, _ = self.tts_class._get_ref_spec(tts, cmd["ref_audio"])
        tts.prompt_cache["refer_spec"] = [(spec, None)]
        tts.prompt_cache["prompt_semantic"] = self.inputs["prompt_tokens"]
        tts.prompt_cache["phones"] = self.inputs["prompt_phones"].tolist()
        self.tts = tts
        ours = self.inputs.get("spectrogram")
        spec_diff = None
        if ours is not None and ours.shape[-1] == spec.shape[-1]:
            spec_diff = float((spec.float().cpu() - ours.float().cpu()).abs().max())
        return {
            "sovits_version_detected": detected,
            "sovits_md5_registered": registered,
            "vocoder": type(tts.vocoder).__name__,
            "vocoder_configs": dict(tts.vocoder_configs),
            "ref_spec_max_abs_diff": spec_diff,
        }

    def load_bert(self, path: str) -> None:
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        self.bert_tokenizer = AutoTokenizer.from_pretrained(path)
        self.bert_model = AutoModelForMaskedLM.from_pretrained(path).eval().to(self.device, self.dtype)

    @torch.inference_mode()
    def bert(self, cmd: dict) -> dict:
        """Each segment's target BERT features, timed; and how far they are from the ones we sent."""
        segments = []
        for seg in self.inputs["cases"][cmd["case"]]:
            started = time.perf_counter()
            columns = []
            for run in seg["bert_runs"]:
                if run["language"] != "zh":
                    columns.append(torch.zeros(1024, run["phones"], dtype=self.dtype, device=self.device))
                    continue
                inputs = {
                    k: v.to(self.device) for k, v in self.bert_tokenizer(run["norm_text"], return_tensors="pt").items()
                }
                hidden = self.bert_model(**inputs, output_hidden_states=True)["hidden_states"][-3][0, 1:-1]
                columns.append(
                    torch.repeat_interleave(hidden, torch.tensor(run["word2ph"], device=self.device), dim=0).T
                )
            features = torch.cat(columns, dim=1)
            self.sync()
            elapsed = time.perf_counter() - started
            ours = seg["bert"][:, seg["bert"].shape[1] - features.shape[1] :].to(features)
            segments.append(
                {"bert_s": elapsed, "max_abs_diff": float((features - ours).abs().max()) if features.numel() else 0.0}
            )
        return {"segments": segments}

    @torch.inference_mode()
    def gpt(self, cmd: dict) -> dict:
        model = self.t2s
        data = self.inputs["cases"][cmd["case"]]
        prompt = self.inputs["prompt_tokens"]
        transformer = model.t2s_transformer
        original = transformer.decode_next_token
        segments = []
        reset_peak_rss()
        for index, seg in enumerate(data):
            marks: list[float] = []

            def timed_step(*args, _marks=marks, **kwargs):  # upstream's signature; _marks: this segment's list
                if not _marks:
                    _marks.append(time.perf_counter())  # prefill and the first sample are done
                return original(*args, **kwargs)

            transformer.decode_next_token = timed_step
            phones = seg["phone_ids"][None]
            bert = seg["bert"][None].to(self.dtype)
            torch.manual_seed(int(cmd["seeds"][index]))
            started = time.perf_counter()
            y, idx = model.infer_panel(
                phones,
                torch.tensor([phones.shape[-1]], device=self.device),
                None if prompt is None else prompt[None],
                bert,
                top_k=cmd["top_k"],
                top_p=cmd["top_p"],
                temperature=cmd["temperature"],
                repetition_penalty=cmd["repetition_penalty"],
                early_stop_num=cmd["early_stop_num"],
            )
            self.sync()
            ended = time.perf_counter()
            transformer.decode_next_token = original
            prefix = 0 if prompt is None else prompt.numel()
            tokens = y[0, prefix:].tolist()
            first = marks[0] if marks else ended
            segments.append(
                {
                    "prefill_s": first - started,
                    "decode_s": ended - first,
                    "steps": int(idx) + 1,
                    "tokens": tokens,
                }
            )
        return {"segments": segments, "peak_rss_mib": peak_rss_mib()}

    @torch.inference_mode()
    def vocoder(self, cmd: dict) -> dict:
        if self.tts is not None:
            return self.mel_vocoder(cmd)
        data = self.inputs["cases"][cmd["case"]]
        refer = [self.inputs["spectrogram"].to(self.dtype)]
        sv = self.inputs.get("sv_emb")
        sv_emb = [sv.to(self.dtype)] if self.is_pro and sv is not None else None
        segments, audio = [], []
        reset_peak_rss()
        for index, (seg, tokens) in enumerate(zip(data, cmd["tokens"])):
            codes = torch.tensor(tokens, dtype=torch.long, device=self.device)[None, None]
            torch.manual_seed(int(cmd["seeds"][index]))  # the prior noise: randn_like on the global stream
            started = time.perf_counter()
            wav = self.vits.decode(
                codes, seg["target_ids"][None], refer, noise_scale=cmd["noise_scale"], speed=1.0, sv_emb=sv_emb
            )
            samples = wav.detach()[0, 0, :].float().cpu()
            segments.append({"vocoder_s": time.perf_counter() - started, "samples": samples.numel()})
            audio.append(samples)
        if cmd.get("save_audio"):
            torch.save(audio, cmd["save_audio"])
        return {"segments": segments, "peak_rss_mib": peak_rss_mib()}

    @torch.inference_mode()
    def mel_vocoder(self, cmd: dict) -> dict:
        """v3/v4: TTS.using_vocoder_synthesis per segment (features, chunked flow matching, vocoder)."""
        data = self.inputs["cases"][cmd["case"]]
        segments, audio = [], []
        reset_peak_rss()
        for index, (seg, tokens) in enumerate(zip(data, cmd["tokens"])):
            codes = torch.tensor(tokens, dtype=torch.long, device=self.device)[None, None]
            phones = seg["target_ids"][None].to(self.device)
            torch.manual_seed(int(cmd["seeds"][index]))  # CFM.inference draws its noise with torch.randn
            started = time.perf_counter()
            wav = self.tts_class.using_vocoder_synthesis(
                self.tts, codes, phones, speed=1.0, sample_steps=int(cmd["sample_steps"])
            )
            samples = wav.detach().reshape(-1).float().cpu()
            segments.append({"vocoder_s": time.perf_counter() - started, "samples": samples.numel()})
            audio.append(samples)
        if cmd.get("save_audio"):
            torch.save(audio, cmd["save_audio"])
        return {"segments": segments, "peak_rss_mib": peak_rss_mib()}


def main() -> None:
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # upstream prints freely: keep it off the protocol channel
    sys.stdout = sys.stderr
    worker = Upstream()
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        try:
            reply = {"ok": True, **getattr(worker, cmd["op"])(cmd)}
        except Exception as e:  # the parent decides what a failure means; it gets the whole trace
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()}
        protocol.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    main()
