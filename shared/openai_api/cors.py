"""Cross-origin access for browsers on other origins: off unless ``GSV_HTTP_CORS_ORIGINS`` lists them.

The API has no authentication, so by default no other web origin may read its answers (a page
elsewhere could otherwise use the server of whoever opens it). ``GSV_HTTP_CORS_ORIGINS`` is a
comma-separated list of origins (``https://app.example,http://localhost:3000``) or ``*``. An
allowed origin gets ``Access-Control-Allow-Origin`` on every answer, errors included, and its
preflight ``OPTIONS`` a 204; a preflight from any other origin a 403 in the API's error shape that
names the setting, instead of aiohttp's bare 405.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .errors import ApiError

ALLOWED_METHODS = "GET, POST, OPTIONS"
# Headers a page may read: the server's own metrics headers beside the audio.
EXPOSED_HEADERS = "X-Request-Id, X-Time-To-First-Audio, X-Sample-Rate, X-Development-Model, X-Audio-Format"
PREFLIGHT_MAX_AGE_SECONDS = 600


@dataclass(frozen=True)
class CorsPolicy:
    origins: tuple[str, ...] = ()  # empty: off; ("*",): any origin

    @classmethod
    def parse(cls, text: str) -> CorsPolicy:
        return cls(tuple(o.strip().rstrip("/") for o in text.split(",") if o.strip()))

    def allows(self, origin: str | None) -> bool:
        return bool(origin) and ("*" in self.origins or origin in self.origins)

    def headers(self, origin: str | None) -> dict[str, str]:
        """What an answer to ``origin`` carries (nothing for an origin not allowed)."""
        if not self.allows(origin):
            return {}
        if "*" in self.origins:
            return {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": EXPOSED_HEADERS}
        return {
            "Access-Control-Allow-Origin": str(origin),
            "Access-Control-Expose-Headers": EXPOSED_HEADERS,
            "Vary": "Origin",
        }

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Answers every ``OPTIONS`` (a browser's preflight) whatever the path; the rest goes on."""
        if request.method == "OPTIONS":
            return self.preflight(request)
        return await handler(request)

    def preflight(self, request: web.Request) -> web.Response:
        origin = request.headers.get("Origin")
        if not self.allows(origin):
            why = "cross-origin requests are off" if not self.origins else f"origin {ascii(origin)} is not allowed"
            raise ApiError(403, f"{why}; the server's GSV_HTTP_CORS_ORIGINS lists the allowed origins", None, "cors")
        headers = self.headers(origin) | {
            "Access-Control-Allow-Methods": ALLOWED_METHODS,
            "Access-Control-Allow-Headers": request.headers.get("Access-Control-Request-Headers", "Content-Type"),
            "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_SECONDS),
        }
        return web.Response(status=204, headers=headers)

    async def on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        """aiohttp's on_response_prepare: the headers join every answer, streamed ones too."""
        for name, value in self.headers(request.headers.get("Origin")).items():
            response.headers.setdefault(name, value)
