"""The HTTP server's settings, from the environment (the ``GSV_HTTP_`` variables of ``settings.HTTPSettings``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..settings import HTTPSettings
from .audio_encoding import OPENAI_PCM_RATE


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"  # localhost only unless asked: the API has no authentication
    port: int = 8880
    sample_rate: int = OPENAI_PCM_RATE  # of the served audio (opus: the next rate libopus takes)
    max_input_chars: int = 4096
    max_active_requests: int = 8  # beyond: 429, so a burst cannot queue unbounded work
    chunk_timeout_seconds: float = 300.0  # longest wait for the next piece of audio: 504 / aborted stream
    # Longest time requests are refused (503) after a node restarted when no sign that it serves
    # again reaches the server (bridge.py says which signs do).
    restart_grace_seconds: float = 120.0
    cors_origins: str = ""  # comma-separated origins browsers may call from, or "*"; "" = none (cors.py)

    @classmethod
    def from_settings(cls, s: HTTPSettings) -> ServerConfig:
        return cls(
            s.host,
            s.port,
            s.sample_rate,
            s.max_input_chars,
            s.max_requests,
            s.timeout,
            s.restart_grace,
            s.cors_origins or "",
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ServerConfig:
        """``settings.HTTPSettings``: a bad value raises ``SettingsError`` naming the variable."""
        return cls.from_settings(HTTPSettings.from_env(env))
