"""dataflows/fast-cpu.yml: the default graph plus the two bfloat16 opt-ins, nothing else."""

from __future__ import annotations

import yaml
from conftest import REPO

from dora_gpt_sovits.gpt.options import TorchGPTOptions
from dora_gpt_sovits.settings import ModelNodeSettings

OPT_INS = {"gpt": {"GSV_GPT_PREFILL_DTYPE": "bfloat16"}, "vocoder": {"GSV_DTYPE": "bfloat16"}}


def load(path: str) -> dict:
    return yaml.safe_load((REPO / path).read_text(encoding="utf-8"))


def test_the_fast_graph_is_the_default_graph_with_the_bfloat16_opt_ins_only():
    default, fast = load("dataflow.yml"), load("dataflows/fast-cpu.yml")
    defaults = {n["id"]: n.get("env") or {} for n in default["nodes"]}
    for node in fast["nodes"]:
        if node["id"] in OPT_INS:
            assert node["env"] == {**defaults[node["id"]], **OPT_INS[node["id"]]}, node["id"]
            node["env"] = defaults[node["id"]]
        if "operator" in node:  # the variant lives in dataflows/
            node["operator"]["python"] = node["operator"]["python"].removeprefix("../")
    assert fast == default


def test_the_opt_ins_are_valid_settings():
    assert TorchGPTOptions.from_env(OPT_INS["gpt"]).prefill_dtype == "bfloat16"
    assert ModelNodeSettings.from_env(OPT_INS["vocoder"]).dtype == "bfloat16"
