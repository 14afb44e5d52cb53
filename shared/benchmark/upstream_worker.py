"""Runs upstream GPT-SoVITS's own inference code on request: the side-by-side half of the benchmark.

Started by :mod:`dora_gpt_sovits.benchmark.upstream` as ``python upstream_worker.py`` with
``PYTHONPATH`` pointing into an upstream checkout (``<checkout>/GPT_SoVITS`` and ``<checkout>``). It
imports nothing of this project, only torch and upstream's modules, so it also runs under an
interpreter that has upstream's requirements instead of ours (``--upstream-python``).

Upstream code used, unchanged: ``AR.models.t2s_model.Text2SemanticDecoder`` (weights loaded the way
its Lightning wrapper does, decoding with ``infer_panel_naive``, what ``TTS_infer_pack/TTS.py`` calls
for batch size 1) and ``module.models.SynthesizerTrn`` (built and loaded as ``TTS.init_vits_weights``
does for v1/v2/v2Pro/v2ProPlus, decoding with ``.decode``).

Upstream's BERT step is the one stage not run through its own module: ``TextPreprocessor`` imports
the whole text frontend (jieba, g2pW, a language detector fetched at run time). :meth:`Upstream.bert`
makes the same ``transformers`` calls its ``get_bert_feature`` makes (model loaded as
``TTS.init_bert_weights`` does; the full encoder with every hidden state, the third-from-last layer
spread over phones), for the timing; zeros for non-Chinese runs, as its ``get_bert_inf``.

Protocol: one JSON command per line on stdin, one JSON reply per line on the original stdout.
Everything upstream prints (its tqdm bar included) goes to stderr.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


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

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # -- commands ---------------------------------------------------------------------------------

    def load(self, cmd: dict) -> dict:
        torch.set_num_threads(int(cmd["threads"]))
        self.device = torch.device(cmd["device"])
        self.dtype = DTYPES[cmd["dtype"]]
        started = time.perf_counter()
        t2s_report = self.load_t2s(cmd["gpt_path"])
        t2s_s = time.perf_counter() - started
        started = time.perf_counter()
        vits_report = self.load_vits(cmd["sovits_path"], cmd["model_version"])
        vits_s = time.perf_counter() - started
        started = time.perf_counter()
        self.load_bert(cmd["bert_path"])
        bert_s = time.perf_counter() - started
        self.inputs = torch.load(cmd["inputs_path"], map_location=self.device, weights_only=True)
        return {
            "load_s": {"gpt": round(t2s_s, 3), "sovits": round(vits_s, 3), "bert": round(bert_s, 3)},
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
