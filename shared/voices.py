"""Voices: a reference recording plus the text spoken in it, by name.

A voice conditions both models: its audio gives the GPT its prompt tokens and SoVITS its timbre; its
prompt text is prepended to every segment's phones (leave it empty for reference-free mode).

Where voices come from, first match wins:

* ``GSV_VOICES``: a YAML file ``{name: {ref_audio, prompt_text, prompt_language, gpt_weights,
  sovits_weights}}``; relative paths are relative to the file; ``gpt_weights`` / ``sovits_weights``
  (optional) name a speaker's fine-tuned GPT ``.ckpt`` / SoVITS ``.pth`` (see ``model_cache``);
  ``aliases`` (optional) lists other names the HTTP server accepts for the voice, e.g. OpenAI's
  ``[alloy, nova]``, so clients that only know OpenAI's voices reach it (:func:`voice_aliases`);
* ``GSV_REF_AUDIO`` (+ ``GSV_PROMPT_TEXT``, ``GSV_PROMPT_LANGUAGE``): the voice named ``default``;
* ``voices.yml`` inside the model directory (development bundles ship one).

A text request may also bring its own voice (metadata ``ref_audio``, ``prompt_text``,
``prompt_language``): :func:`adhoc_voice` names it after its definition, so the same definition is
one voice, encoded once.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from .messages import DEFAULT_VOICE, PROMPT_LANGUAGE, PROMPT_TEXT, REF_AUDIO


class VoiceError(ValueError):
    """A voice is unknown or its definition is incomplete."""


@dataclass(frozen=True)
class Voice:
    name: str
    ref_audio: Path
    prompt_text: str  # "" = reference-free: the GPT decodes without prompt tokens
    prompt_language: str
    gpt_weights: Path | None = None  # this speaker's GPT .ckpt; None = the graph's
    sovits_weights: Path | None = None  # this speaker's SoVITS .pth; None = the graph's
    aliases: tuple[str, ...] = ()  # other names for it on the HTTP API (OpenAI's alloy, nova ...)

    def check_files(self) -> None:
        for what, path in (("gpt_weights", self.gpt_weights), ("sovits_weights", self.sovits_weights)):
            if path is not None and not path.exists():
                raise VoiceError(f"voice {self.name!r}: {what} {path} does not exist")
            if path is not None and not path.is_file():  # a FIFO or device would block the loader
                raise VoiceError(f"voice {self.name!r}: {what} {path} is not a regular file")


def adhoc_voice(metadata: Mapping[str, object]) -> Voice | None:
    """The voice a request defines in its own metadata (``ref_audio`` ...), or None."""
    if not metadata.get(REF_AUDIO):
        return None
    audio = str(metadata[REF_AUDIO])
    text = str(metadata.get(PROMPT_TEXT, "") or "")
    language = str(metadata.get(PROMPT_LANGUAGE, "") or "zh")
    digest = hashlib.sha1("\0".join((audio, text, language)).encode("utf-8")).hexdigest()[:12]
    return Voice(f"adhoc-{digest}", Path(audio).expanduser(), text, language)


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


def voice_aliases(registry: Mapping[str, Voice]) -> dict[str, str]:
    """alias -> voice name over the registry; an alias that names a voice or two voices is an error."""
    aliases: dict[str, str] = {}
    for voice in registry.values():
        for alias in voice.aliases:
            if alias in registry:
                raise VoiceError(f"voice {voice.name!r}: alias {alias!r} is already the name of a voice")
            if alias in aliases and aliases[alias] != voice.name:
                raise VoiceError(f"alias {alias!r} is given to two voices: {aliases[alias]!r} and {voice.name!r}")
            aliases[alias] = voice.name
    return aliases


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
        voices[str(name)] = Voice(
            str(name),
            _relative_to(file, spec["ref_audio"]),
            str(spec.get("prompt_text", "") or ""),
            str(spec.get("prompt_language", "zh")),
            _relative_to(file, spec["gpt_weights"]) if spec.get("gpt_weights") else None,
            _relative_to(file, spec["sovits_weights"]) if spec.get("sovits_weights") else None,
            _aliases(file, name, spec.get("aliases")),
        )
    return voices


def _aliases(file: Path, name: object, value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(a, str) and a.strip() for a in value):
        raise VoiceError(f"{file}: voice {name!r}: 'aliases' must be a list of names, got {value!r}")
    return tuple(a.strip() for a in value)


def _relative_to(file: Path, value: object) -> Path:
    path = Path(str(value)).expanduser()
    return path if path.is_absolute() else file.parent / path
