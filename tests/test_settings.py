"""Settings (shared/settings.py): typed, one-line errors, and the docs table kept in step with them;
the library never imports the nodes."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch

from dora_gpt_sovits import settings as s
from dora_gpt_sovits.backends.config import choice_from_env

ROOT = Path(__file__).resolve().parents[1]
NAME = re.compile(r"GSV_[A-Z0-9_]*[A-Z0-9](?![A-Z0-9_])")  # a prefix such as GSV_HTTP_ is no name


def config_table() -> dict[str, str]:
    """docs/architecture.md's configuration table: variable -> that row's default cell."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[0].startswith("`GSV_"):
            for name in NAME.findall(cells[0]):
                rows[name] = cells[2]
    return rows


def test_every_setting_is_in_the_docs_table_with_its_default():
    table = config_table()
    variables = s.all_variables()
    missing = sorted(set(variables) - set(table))
    assert not missing, f"docs/architecture.md's configuration table lacks {missing}"
    wrong = {
        name: (var.default_doc, table[name])
        for name, (_, var) in variables.items()
        if var.default_doc not in table[name]
    }
    assert not wrong, f"defaults in the docs table differ from the settings classes: {wrong}"
    unknown = sorted(set(table) - set(variables))
    assert not unknown, f"the docs table lists variables no settings class declares: {unknown}"


def test_every_variable_the_code_names_is_declared():
    named = set()
    for folder in ("shared", "nodes", "operators"):
        for path in (ROOT / folder).rglob("*.py"):
            named |= set(NAME.findall(path.read_text(encoding="utf-8")))
    undeclared = sorted(named - set(s.all_variables()))
    assert not undeclared, (
        f"GSV_* names in the code that shared/settings.py does not declare (nor the docs): {undeclared}"
    )


def test_defaults_match_what_the_nodes_used():
    gpt = s.GPTSettings.from_env({})
    assert (gpt.top_k, gpt.top_p, gpt.temperature, gpt.repetition_penalty, gpt.seed) == (15, 1.0, 1.0, 1.35, None)
    assert (gpt.first_chunk_tokens, gpt.chunk_growth, gpt.chunk_tokens, gpt.max_models) == (8, 1.5, 40, 2)
    voc = s.VocoderSettings.from_env({})
    assert (voc.noise_scale, voc.speed, voc.lookahead_tokens, voc.fragment_interval, voc.max_chunk_seconds) == (
        0.5,
        1.0,
        4,
        0.3,
        1.0,
    )
    assert (voc.seed, voc.output_sample_rate, voc.max_lead_seconds, voc.coalesce_lead_seconds) == (
        None,
        None,
        None,
        1.0,
    )
    assert voc.limiter() is None and voc.vocoder_fft == "auto"
    front = s.FrontendSettings.from_env({})
    assert (front.version, front.split_method, front.language, front.max_segments_ahead) == ("v2", "cut5", "auto", 0)
    assert s.SinkSettings.from_env({}) == s.SinkSettings("auto", Path("out/speech.wav"))
    assert s.TextInputSettings.from_env({}).voice == "default"
    http = s.HTTPSettings.from_env({})
    assert (http.host, http.port, http.sample_rate, http.timeout, http.restart_grace) == (
        "127.0.0.1",
        8880,
        24000,
        300.0,
        120.0,
    )
    assert s.RuntimeSettings.from_env({}) == s.RuntimeSettings("INFO", None, None)


def test_values_are_parsed_and_empty_means_default():
    voc = s.VocoderSettings.from_env(
        {
            "GSV_SEED": "7",
            "GSV_OUTPUT_SAMPLE_RATE": "24000",
            "GSV_MAX_LEAD_SECONDS": "2.5",
            "GSV_PEAK_LIMIT": "0.45",
            "GSV_NOISE_SCALE": " ",
            "GSV_DEVICE": "CUDA",
        }
    )
    assert (voc.seed, voc.output_sample_rate, voc.max_lead_seconds, voc.noise_scale, voc.device) == (
        7,
        24000,
        2.5,
        0.5,
        "cuda:0",
    )
    assert voc.limiter().limit == 0.45 and voc.limiter().gain == 0.45
    assert s.RuntimeSettings.from_env({"GSV_LOG_LEVEL": "debug"}).log_level == "DEBUG"
    assert s.SinkSettings.from_env({"GSV_SINK": "WAV"}).sink == "wav"


@pytest.mark.parametrize(
    "cls, env, words",
    [
        (s.GPTSettings, {"GSV_TOP_P": "2"}, "GSV_TOP_P='2': expected a number in [0.0, 1.0]"),
        (s.GPTSettings, {"GSV_TOP_K": "fifteen"}, "GSV_TOP_K='fifteen': expected an integer >= 0"),
        (s.VocoderSettings, {"GSV_NOISE_SCALE": "0,5"}, "GSV_NOISE_SCALE='0,5': expected a number >= 0.0"),
        (s.VocoderSettings, {"GSV_SPEED": "nan"}, "GSV_SPEED='nan'"),
        (s.VocoderSettings, {"GSV_VOCODER_FFT": "fast"}, "GSV_VOCODER_FFT='fast': expected one of auto, 1, 0"),
        (s.FrontendSettings, {"GSV_SPLIT_METHOD": "cut9"}, "GSV_SPLIT_METHOD='cut9': expected one of cut0"),
        (s.FrontendSettings, {"GSV_MAX_SEGMENTS_AHEAD": "-1"}, "GSV_MAX_SEGMENTS_AHEAD='-1'"),
        (s.SinkSettings, {"GSV_SINK": "speakers"}, "GSV_SINK='speakers': expected one of auto, speaker, wav, null"),
        (s.HTTPSettings, {"GSV_HTTP_PORT": "99999"}, "GSV_HTTP_PORT='99999': expected an integer in [0, 65535]"),
        (s.TextInputSettings, {"GSV_TEXT_LISTEN": "localhost:http"}, "GSV_TEXT_LISTEN='localhost:http'"),
        (s.BertSettings, {"GSV_DEVICE": "gpu"}, "GSV_DEVICE='gpu' is not a device"),
        (s.ReferenceSettings, {"GSV_DTYPE": "int4"}, "GSV_DTYPE='int4' is not one of float32, float16, bfloat16"),
        (s.RuntimeSettings, {"GSV_THREADS": "many"}, "GSV_THREADS='many': expected an integer >= 0"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(cls, env, words):
    with pytest.raises(s.SettingsError) as caught:
        cls.from_env(env)
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_a_node_ends_with_the_line(capsys):
    with pytest.raises(SystemExit) as caught:
        s.from_env_or_exit(s.GPTSettings, {"GSV_TEMPERATURE": "hot"})
    assert caught.value.code == 2
    assert capsys.readouterr().err.strip() == "error: GSV_TEMPERATURE='hot': expected a number > 0.0"


def test_one_device_and_dtype_parser():
    assert s.parse_device(" cuda ") == "cuda:0" and s.parse_device("cuda:1") == "cuda:1"
    assert dict(s.DTYPES) == {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    model = s.ModelNodeSettings.from_env({"GSV_DTYPE": "bfloat16"})
    assert model.torch_device() == torch.device("cpu") and model.torch_dtype() is torch.bfloat16
    assert choice_from_env({"GSV_DEVICE": "cuda"}).device == s.parse_device("cuda")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            prefix = "." * node.level + (node.module or "")
            found |= {prefix} | {f"{prefix}.{a.name}" if node.module else f"{prefix}{a.name}" for a in node.names}
    return found


def test_the_library_never_imports_the_nodes():
    offenders = {}
    for path in (ROOT / "shared").rglob("*.py"):
        bad = {
            name
            for name in _imports(path)
            if name.startswith("dora_gpt_sovits.nodes") or re.match(r"^\.+nodes(\.|$)", name)
        }
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert not offenders, f"shared/ must not import nodes/: {offenders}"


def test_bert_onednn_setting_maps_to_the_loader():
    assert s.BertSettings.from_env({}).pack_products is None  # auto: the CPU decides
    assert s.BertSettings.from_env({"GSV_BERT_ONEDNN": "0"}).pack_products is False
    assert s.BertSettings.from_env({"GSV_BERT_ONEDNN": "1"}).pack_products is True
    with pytest.raises(s.SettingsError, match="GSV_BERT_ONEDNN"):
        s.BertSettings.from_env({"GSV_BERT_ONEDNN": "yes"})
