"""The result document as a markdown report: conditions first, then one table per view."""

from __future__ import annotations

from typing import Any

SPREAD_NOTE = "Each cell: median over the measured repeats, (x%) = interquartile range / median."


def cell(summary: dict[str, float] | None, scale: float = 1.0, digits: int = 2, spread: bool = True) -> str:
    if not summary:
        return "—"
    text = f"{summary['median'] * scale:.{digits}f}"
    if spread and summary.get("n", 1) > 1:
        text += f" ({100 * summary['spread']:.0f}%)"
    return text


def load_text(load: dict[str, float]) -> str:
    return f"{load['min']:.1f}–{load['max']:.1f} (mean {load['mean']:.1f})" if load else "unknown"


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def plain(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "—" if value is None else f"{value:.{digits}f}{suffix}"


def bandwidth_lines(b: dict[str, Any] | None) -> list[str]:
    if not b:
        return []
    return [
        f"* GPT decode bandwidth used / available: {b['used_gbs']:.1f} / {b['available_gbs']:.1f} GB/s "
        f"({100 * b['used_fraction']:.0f}%, {b['threads']} threads; {b['weight_mb']:.0f} MB of weights per token); "
        f"floor {b['floor_ms_per_token']:.2f} ms/token, decode {b['vs_floor']:.2f}x the floor"
        + (
            f"; with the cached keys/values it also reads ({b['cache_mb_per_step']:.0f} MB per step on average) "
            f"the floor is {b['floor_with_cache_ms_per_token']:.2f} ms/token, decode {b['vs_floor_with_cache']:.2f}x it"
            if b.get("cache_mb_per_step")
            else ""
        )
    ]


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def conditions(doc: dict[str, Any]) -> list[str]:
    host, cfg = doc["host"], doc["config"]
    lines = [
        f"* Date: {host['date']}; commit {host['git_commit']}",
        f"* Host: {host['cpu_model']}, {host['logical_cpus']} logical CPUs, {host['memory_gib']} GiB"
        + (f"; GPU {host['gpu']}" if host.get("gpu") else ""),
        *(
            [
                f"* CPU extensions: {', '.join(host.get('cpu_flags') or []) or 'unknown'}; read bandwidth "
                + ", ".join(f"{gbs} GB/s on {n} thread(s)" for n, gbs in host["read_bandwidth_gbs"].items())
            ]
            if host.get("read_bandwidth_gbs")
            else []
        ),
        f"* Load average (1 min) during the run: {load_text(doc['load_during_run'])}; at start {host['load_average'][0]:.1f}",
        f"* Python {host['python']}, torch {host['torch']}, dora-rs {host['dora_rs']}, numpy {host['numpy']}",
        f"* Backend {cfg['backend']}, device {host['device']}, dtype {host['dtype']}, {host['threads']} torch threads"
        " (upstream's worker and every dataflow node: the same)"
        + (f"; our GPT: {cfg['gpt_options']}" if cfg.get("gpt_options") else "")
        + (
            f"; our vocoder: {cfg['vocoder_dtype']}" if cfg.get("vocoder_dtype", host["dtype"]) != host["dtype"] else ""
        ),
        f"* Model: {cfg['model_version']} from {cfg['model_dir']}"
        + (
            " — DEVELOPMENT MODEL (random weights, full size): speed is real, audio is noise"
            if cfg["development_model"]
            else ""
        ),
        f"* GPT budget: early_stop_num = {cfg['tokens_per_segment']} → {cfg['tokens_per_segment'] + 1} tokens per segment "
        f"({(cfg['tokens_per_segment'] + 1) / 25:.2f} s of speech); sampling top_k {cfg['sampling']['top_k']}, "
        f"top_p {cfg['sampling']['top_p']}, temperature {cfg['sampling']['temperature']}, repetition penalty "
        f"{cfg['sampling']['repetition_penalty']}; seed {cfg['seed']} (segment i: seed + i)",
        f"* Repeats: {cfg['repeats']} measured per case, after {cfg['warmup']} warm-up round(s) over the shortest text of each "
        f"language; sentence split {cfg['split_method']}",
    ]
    return lines


def ours_table(doc: dict[str, Any]) -> list[str]:
    header = [
        "case",
        "segs",
        "chars",
        "prefill ms/seg",
        "decode ms/tok",
        "decode tok/s",
        "vocoder RTF",
        "e2e RTF",
        "first segment's audio s",
        "chars/s",
        "peak RSS MiB",
    ]
    rows = []
    for name, c in doc["cases"].items():
        o = c["ours"]
        rows.append(
            [
                name,
                str(c["segments"]),
                str(c["chars"]),
                cell(o["gpt_prefill_ms_per_segment"], digits=0),
                cell(o["gpt_decode_ms_per_token"], digits=1),
                cell(o["gpt_decode_tok_per_s"], digits=1, spread=False),
                cell(o["vocoder_rtf"], digits=3),
                cell(o["e2e_rtf"], digits=3),
                cell(o["first_audio_s"]),
                cell(o["chars_per_s"], digits=1, spread=False),
                plain(o["peak_rss_mib"], 0),
            ]
        )
    return table(header, rows)


def stage_table(doc: dict[str, Any]) -> list[str]:
    header = ["case", "frontend s", "BERT s", "GPT prefill s", "GPT decode s", "vocoder s", "wall s", "audio s"]
    rows = []
    for name, c in doc["cases"].items():
        st = c["ours"]["stages_s"]
        rows.append(
            [name]
            + [
                cell(st[k], digits=3, spread=False)
                for k in ("frontend", "bert", "gpt_prefill", "gpt_decode", "vocoder")
            ]
            + [cell(c["ours"]["wall_s"], digits=2, spread=False), plain(c["ours"]["audio_s"])]
        )
    return table(header, rows)


def upstream_table(doc: dict[str, Any]) -> list[str]:
    header = [
        "case",
        "prefill ms/seg ours / upstream",
        "decode ms/tok ours / upstream",
        "vocoder RTF ours / upstream",
        "GPT+vocoder RTF ours / upstream",
        "e2e RTF ours / upstream (≥, no frontend)",
        "speed-up prefill / decode / vocoder / GPT+vocoder / e2e (≥)",
        "same tokens",
        "audio max |Δ|",
        "BERT max |Δ|",
    ]
    rows = []
    for name, c in doc["cases"].items():
        if "upstream" not in c:
            continue
        o, u, r = c["ours"], c["upstream"], c["speedup_vs_upstream"]
        rows.append(
            [
                name,
                f"{cell(o['gpt_prefill_ms_per_segment'], digits=0, spread=False)} / {cell(u['gpt_prefill_ms_per_segment'], digits=0, spread=False)}",
                f"{cell(o['gpt_decode_ms_per_token'], digits=1, spread=False)} / {cell(u['gpt_decode_ms_per_token'], digits=1, spread=False)}",
                f"{cell(o['vocoder_rtf'], digits=3, spread=False)} / {cell(u['vocoder_rtf'], digits=3, spread=False)}",
                f"{cell(o['model_rtf'], digits=3, spread=False)} / {cell(u['model_rtf'], digits=3, spread=False)}",
                f"{cell(o['e2e_rtf'], digits=3, spread=False)} / {cell(u.get('e2e_rtf_lower_bound'), digits=3, spread=False)}",
                " / ".join(
                    plain(r.get(k), 2, "×")
                    for k in ("gpt_prefill", "gpt_decode", "vocoder", "gpt_plus_vocoder", "end_to_end_at_least")
                ),
                "yes" if u["tokens_equal_ours"] else "no",
                plain(u["audio_max_abs_diff"], 7) if u["audio_max_abs_diff"] is not None else "—",
                plain(u.get("bert_max_abs_diff"), 7) if u.get("bert_max_abs_diff") is not None else "—",
            ]
        )
    return table(header, rows)


def dataflow_table(doc: dict[str, Any]) -> list[str]:
    header = ["case", "TTFA s", "RTF", "wall s", "audio s"]
    rows = []
    for name, c in doc["cases"].items():
        d = c.get("dataflow")
        if d is None:
            continue
        rows.append(
            [name, cell(d["ttfa_s"], digits=3), cell(d["rtf"], digits=3), cell(d["wall_s"]), plain(d["audio_s"])]
        )
    return table(header, rows)


def hashes_table(doc: dict[str, Any]) -> list[str]:
    header = ["case", "segments", "target phones", "prompt phones + tokens", "tokens/segment", "token hash", "stable"]
    rows = []
    for name, c in doc["cases"].items():
        rows.append(
            [
                name,
                str(c["segments"]),
                ",".join(map(str, c["target_phones"])),
                f"{c['prompt_phones']} + {c['prompt_tokens']}",
                ",".join(sorted(set(map(str, c["tokens_per_segment"])))),
                f"`{c['token_hash']}`",
                "yes" if c["token_hash_stable"] else "NO",
            ]
        )
    return table(header, rows)


def to_markdown(doc: dict[str, Any]) -> str:
    lines = [
        "# dora-gpt-sovits benchmark",
        "",
        *conditions(doc),
        "",
        SPREAD_NOTE,
        "",
        "## Ours, in-process (text → frontend → BERT → GPT → vocoder)",
        "",
        "Each segment is decoded whole, then vocoded whole (no streaming inside a segment).",
        "",
        *ours_table(doc),
        "",
        "Stage breakdown (medians, seconds per text):",
        "",
        *stage_table(doc),
        "",
    ]
    if any("upstream" in c for c in doc["cases"].values()):
        up = doc.get("upstream", {})
        lines += [
            "## Side by side with upstream GPT-SoVITS",
            "",
            f"Upstream checkout {up.get('checkout')} (commit {up.get('commit')}), its own "
            "`Text2SemanticDecoder.infer_panel_naive` and `SynthesizerTrn.decode` on the same checkpoint files, "
            "inputs, seeds and thread count, interleaved with ours case by case. Its vocoder decodes our tokens. "
            "Its BERT step: the `transformers` calls of its `get_bert_feature` on the same text. Its text "
            "frontend is not run, so its end to end is at least the e2e column's figure. "
            "Speed-up = upstream time / our time (> 1: ours is faster).",
            "",
            *upstream_table(doc),
            "",
        ]
    elif doc.get("upstream", {}).get("error"):
        lines += [
            "## Side by side with upstream GPT-SoVITS",
            "",
            f"Not run: {first_line(doc['upstream']['error'])}",
            "",
        ]
    if any(c.get("dataflow") for c in doc["cases"].values()):
        df = doc["dataflow"]
        lines += [
            "## Through the dataflow (`dora run`, service graph, sink = null)",
            "",
            f"Code at commit {df.get('git_commit')}. Startup (dora run → text-input listening): {df['startup_s']:.1f} s. "
            f"GPT budget in the graph: {df['gpt_tokens_per_segment'] or 'the model’s own (EOS)'} tokens per segment. "
            f"Peak RSS, sum over nodes: {plain(df.get('total_peak_rss_mib'), 0)} MiB.",
            "",
            *dataflow_table(doc),
            "",
        ]
        if df.get("error"):
            lines += [f"**Stopped early:** {first_line(df['error'])} (the requests before it are in the table).", ""]
        if df.get("node_peak_rss_mib"):
            lines += [
                "Peak RSS per node (MiB): "
                + ", ".join(f"{k} {v:.0f}" for k, v in sorted(df["node_peak_rss_mib"].items())),
                "",
            ]
    elif doc.get("dataflow", {}).get("error"):
        lines += ["## Through the dataflow", "", f"Not run: {first_line(doc['dataflow']['error'])}", ""]
    lines += ["## Inputs and token hashes", "", *hashes_table(doc), ""]
    o = doc["overall"].get("ours", {})
    lines += [
        "## Overall (median across cases)",
        "",
        f"* GPT decode {plain(o.get('gpt_decode_ms_per_token'), 1)} ms/token "
        f"({plain(o.get('gpt_decode_tok_per_s'), 1)} tok/s), prefill {plain(o.get('gpt_prefill_ms_per_segment'), 0)} ms/segment",
        *bandwidth_lines(doc["overall"].get("gpt_decode_bandwidth")),
        f"* Vocoder RTF {plain(o.get('vocoder_rtf'), 3)}, end-to-end RTF {plain(o.get('e2e_rtf'), 3)}, "
        f"{plain(o.get('chars_per_s'), 1)} chars/s",
    ]
    if doc["overall"].get("dataflow"):
        lines.append(
            f"* Dataflow TTFA {plain(doc['overall']['dataflow'].get('ttfa_s'), 3)} s, RTF {plain(doc['overall']['dataflow'].get('rtf'), 3)}"
        )
    if doc["overall"].get("speedup_vs_upstream"):
        s = doc["overall"]["speedup_vs_upstream"]
        lines.append("* Speed-up vs upstream: " + ", ".join(f"{k} {v:.2f}×" for k, v in s.items()))
    return "\n".join(lines) + "\n"
