"""The HTTP server's settings, from the environment (``GSV_HTTP_*``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from .audio_encoding import OPENAI_PCM_RATE


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"  # localhost only unless asked: the API has no authentication
    port: int = 8880
    sample_rate: int = OPENAI_PCM_RATE  # of the served audio, WAV and PCM alike
    max_input_chars: int = 4096
    max_active_requests: int = 8  # beyond: 429, so a burst cannot queue unbounded work
    chunk_timeout_seconds: float = 300.0  # longest wait for the next piece of audio: 504 / aborted stream
    # Longest time requests are refused (503) after a node restarted when no sign that it serves
    # again reaches the server (bridge.py says which signs do).
    restart_grace_seconds: float = 120.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "ServerConfig":
        d = cls()
        return cls(
            host=env.get("GSV_HTTP_HOST", d.host),
            port=int(env.get("GSV_HTTP_PORT", d.port)),
            sample_rate=int(env.get("GSV_HTTP_SAMPLE_RATE", d.sample_rate)),
            max_input_chars=int(env.get("GSV_HTTP_MAX_INPUT_CHARS", d.max_input_chars)),
            max_active_requests=int(env.get("GSV_HTTP_MAX_REQUESTS", d.max_active_requests)),
            chunk_timeout_seconds=float(env.get("GSV_HTTP_TIMEOUT", d.chunk_timeout_seconds)),
            restart_grace_seconds=float(env.get("GSV_HTTP_RESTART_GRACE", d.restart_grace_seconds)),
        )
