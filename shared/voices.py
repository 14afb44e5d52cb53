"""Voices: a reference recording plus the text spoken in it, by name.

A voice conditions both models: its audio gives the GPT its prompt tokens and SoVITS its timbre; its
prompt text is prepended to every segment's phones (leave it empty for reference-free mode).

Where voices come from, first match wins:

* ``GSV_VOICES``: a YAML file ``{name: {ref_audio, prompt_text, prompt_language}}``; relative audio
  paths are relative to the file;
* ``GSV_REF_AUDIO`` (+ ``GSV_PROMPT_TEXT``, ``GSV_PROMPT_LANGUAGE``): the voice named ``default``;
* ``voices.yml`` inside the model directory (development bundles ship one).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import yaml

from .messages import DEFAULT_VOICE


class VoiceError(ValueError):
    """A voice is unknown or its definition is incomplete."""


@dataclass(frozen=True)
class Voice:
    name: str
    ref_audio: Path
    prompt_text: str  # "" = reference-free: the GPT decodes without prompt tokens
    prompt_language: str


def load_registry(env: Mapping[str, str] | None = None, model_dir: Path | None = None) -> dict[str, Voice]:
    env = os.environ if env is None else env
    voices: dict[str, Voice] = {}
    candidates = [Path(env["GSV_VOICES"])] if env.get("GSV_VOICES") else []
    if model_dir is not None:
        candidates.append(model_dir / "voices.yml")
    for file in candidates:
        if file.is_file():
            for name, voice in _read_yaml(file).items():
                voices.setdefault(name, voice)
        elif env.get("GSV_VOICES") and file == Path(env["GSV_VOICES"]):
            raise VoiceError(f"GSV_VOICES={file} does not exist")
    if env.get("GSV_REF_AUDIO"):
        voices[DEFAULT_VOICE] = Voice(
            DEFAULT_VOICE,
            Path(env["GSV_REF_AUDIO"]).expanduser(),
            env.get("GSV_PROMPT_TEXT", ""),
            env.get("GSV_PROMPT_LANGUAGE", "zh"),
        )
    return voices


def find_voice(name: str, registry: Mapping[str, Voice]) -> Voice:
    if name in registry:
        return registry[name]
    if not registry:
        raise VoiceError(
            "no voice configured: set GSV_REF_AUDIO (3-10 s reference recording) with GSV_PROMPT_TEXT "
            "(what is said in it) and GSV_PROMPT_LANGUAGE, or GSV_VOICES (a YAML file of voices)"
        )
    raise VoiceError(f"unknown voice {name!r}; known voices: {sorted(registry)}")


def _read_yaml(file: Path) -> dict[str, Voice]:
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise VoiceError(f"{file}: cannot read voices ({e})") from None
    if not isinstance(data, dict):
        raise VoiceError(f"{file}: expected a mapping of voice names")
    voices = {}
    for name, spec in data.items():
        if not isinstance(spec, dict) or "ref_audio" not in spec:
            raise VoiceError(f"{file}: voice {name!r} needs at least 'ref_audio'")
        audio = Path(str(spec["ref_audio"])).expanduser()
        voices[str(name)] = Voice(
            str(name),
            audio if audio.is_absolute() else file.parent / audio,
            str(spec.get("prompt_text", "") or ""),
            str(spec.get("prompt_language", "zh")),
        )
    return voices
