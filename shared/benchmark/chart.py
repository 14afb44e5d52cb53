"""One PNG a person can read at a glance: where the time goes, time to first audio, real-time factor.

Needs matplotlib (the ``bench`` extra: ``pip install -e .[bench]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .report import load_text

STAGE_COLOURS = {
    "frontend": ("text frontend", "#9ecae1"),
    "bert": ("BERT", "#6baed6"),
    "gpt_prefill": ("GPT prefill", "#fdae6b"),
    "gpt_decode": ("GPT decode", "#e6550d"),
    "vocoder": ("vocoder", "#31a354"),
}
TTFA_TARGET_S = 0.6  # the project's CPU target
UPSTREAM_E2E_RTF_ANCHOR = 1.39  # upstream end to end on a 2-core machine (fast-inference-anchors)


def _median(summary: dict[str, float] | None) -> float:
    return summary["median"] if summary else 0.0


def _errors(summary: dict[str, float] | None) -> tuple[float, float]:
    if not summary:
        return 0.0, 0.0
    return summary["median"] - summary["p25"], summary["p75"] - summary["median"]


def stage_panel(ax, doc: dict[str, Any]) -> None:
    names = list(doc["cases"])
    rows, labels = [], []
    for name in names:
        case = doc["cases"][name]
        audio = case["ours"]["audio_s"]
        rows.append({k: _median(case["ours"]["stages_s"][k]) / audio for k in STAGE_COLOURS})
        labels.append(f"{name} ours")
        if "upstream" in case:
            rows.append(
                {
                    k: _median(case["upstream"]["stages_s"].get(k)) / audio
                    for k in STAGE_COLOURS
                    if k in case["upstream"]["stages_s"]
                }
            )
            labels.append(f"{name} upstream*")
    y = list(range(len(rows)))[::-1]
    for stage, (label, colour) in STAGE_COLOURS.items():
        left = [sum(r.get(s, 0.0) for s in list(STAGE_COLOURS)[: list(STAGE_COLOURS).index(stage)]) for r in rows]
        width = [r.get(stage, 0.0) for r in rows]
        hatches = ["//" if lab.endswith("*") else "" for lab in labels]
        bars = ax.barh(y, width, left=left, color=colour, label=label, edgecolor="white", linewidth=0.5)
        for bar, hatch in zip(bars, hatches):
            bar.set_hatch(hatch)
    ax.set_yticks(y, labels, fontsize=8)
    ax.axvline(1.0, color="black", lw=1, ls="--", label="real time")
    ax.set_xlabel("compute seconds per second of audio (stacked RTF)")
    title = "Where the time goes (in-process)"
    if any(lab.endswith("*") for lab in labels):
        title += "\n*upstream: BERT + GPT + vocoder (no frontend), same inputs"
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")


def ttfa_panel(ax, doc: dict[str, Any]) -> None:
    names = list(doc["cases"])
    x = range(len(names))
    width = 0.38
    inproc = [doc["cases"][n]["ours"]["first_audio_s"] for n in names]
    ax.bar(
        [i - width / 2 for i in x],
        [_median(s) for s in inproc],
        width,
        yerr=list(zip(*map(_errors, inproc))),
        color="#6baed6",
        label="in-process: first segment's audio (whole-segment vocoding)",
    )
    dataflow = [(doc["cases"][n].get("dataflow") or {}).get("ttfa_s") for n in names]
    if any(dataflow):
        ax.bar(
            [i + width / 2 for i in x],
            [_median(s) for s in dataflow],
            width,
            yerr=list(zip(*map(_errors, dataflow))),
            color="#e6550d",
            label="dataflow: TTFA at the sink",
        )
    ax.axhline(TTFA_TARGET_S, color="black", lw=1, ls="--")
    ax.text(len(names) - 0.5, TTFA_TARGET_S, f"target {TTFA_TARGET_S} s", fontsize=8, ha="right", va="bottom")
    ax.set_xticks(list(x), names, rotation=30, fontsize=8)
    ax.set_ylabel("seconds (median, IQR bars)")
    ax.set_title("Time to first audio", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")


def rtf_panel(ax, doc: dict[str, Any]) -> None:
    names = list(doc["cases"])
    series = [("ours in-process, end to end", "#31a354", lambda c: c["ours"]["e2e_rtf"])]
    if any(c.get("dataflow") for c in doc["cases"].values()):
        series.append(("ours dataflow (sink)", "#e6550d", lambda c: (c.get("dataflow") or {}).get("rtf")))
    if any("upstream" in c for c in doc["cases"].values()):
        series.append(("ours GPT + vocoder", "#a1d99b", lambda c: c["ours"]["model_rtf"]))
        series.append(
            (
                "upstream BERT + GPT + vocoder (≤ its e2e)",
                "#969696",
                lambda c: (
                    (c.get("upstream") or {}).get("e2e_rtf_lower_bound") or (c.get("upstream") or {}).get("model_rtf")
                ),
            )
        )
    width = 0.8 / len(series)
    for k, (label, colour, pick) in enumerate(series):
        values = [pick(doc["cases"][n]) for n in names]
        xs = [i - 0.4 + width * (k + 0.5) for i in range(len(names))]
        ax.bar(
            xs, [_median(v) for v in values], width, yerr=list(zip(*map(_errors, values))), color=colour, label=label
        )
    ax.axhline(1.0, color="black", lw=1, ls="--")
    ax.axhline(UPSTREAM_E2E_RTF_ANCHOR, color="#636363", lw=1, ls=":")
    ax.text(
        len(names) - 0.5,
        UPSTREAM_E2E_RTF_ANCHOR,
        f"upstream e2e anchor {UPSTREAM_E2E_RTF_ANCHOR}",
        fontsize=8,
        ha="right",
        va="bottom",
    )
    ax.text(-0.5, 1.0, "real time", fontsize=8, ha="left", va="top")
    ax.set_xticks(range(len(names)), names, rotation=30, fontsize=8)
    ax.set_ylabel("real-time factor (lower is faster)")
    ax.set_title("Real-time factor", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")


def write_chart(doc: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    host, cfg = doc["host"], doc["config"]
    fig, axes = plt.subplots(1, 3, figsize=(18, 6.5), gridspec_kw={"width_ratios": [1.3, 1, 1]})
    stage_panel(axes[0], doc)
    ttfa_panel(axes[1], doc)
    rtf_panel(axes[2], doc)
    dev = " — development model (random weights)" if cfg["development_model"] else ""
    fig.suptitle(
        f"dora-gpt-sovits {cfg['backend']} on {host['device']} / {host['dtype']}, {host['threads']} threads{dev}\n"
        f"{host['cpu_model']} · {cfg['tokens_per_segment'] + 1} tokens per segment · {cfg['repeats']} repeats · "
        f"load average {load_text(doc['load_during_run'])} · {host['date']}",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
