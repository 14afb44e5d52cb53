"""The aiohttp application: OpenAI's speech endpoint, model and voice listings, metrics, the page.

``POST /v1/audio/speech`` streams: response headers leave with the first audio (so a request that
fails before any audio still gets a JSON error), then every chunk is encoded (mp3 by default,
opus, aac, flac, wav or pcm) and written the moment the graph delivers it, as raw bytes or, with
``stream_format: "sse"``, as OpenAI's ``speech.audio.delta`` events. Kokoro-FastAPI's
``stream: false`` gets the whole file at once with a Content-Length (and a JSON error for any
failure). A client that disconnects cancels its utterance in the graph. Errors are OpenAI's
JSON (``{"error": {"message", "type", "param", "code"}}``) with a 4xx/5xx status, whatever went
wrong: a body that is not UTF-8 or not JSON (also nested too deeply, or an integer over Python's
4300 digits) is a 400, a request while a node of the graph restarts a 503 with ``Retry-After``,
and a fault of ours a 500 in the same shape. HTTP/1.0 clients get the stream without chunked
encoding, delimited by the connection's close.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from importlib import resources
from typing import Any, Protocol

from aiohttp import HttpVersion11, web

from dora_gpt_sovits import health
from dora_gpt_sovits import messages as m

from . import sse
from .audio_encoding import StreamEncoder
from .config import ServerConfig
from .cors import CorsPolicy
from .metrics import MetricsLog, RequestMetrics
from .router import AudioEvent, Deliver
from .schema import MODEL_ALIASES, MODEL_ID, ApiError, Limits, SpeechRequest, parse_speech_request

log = logging.getLogger("gsv.http-server")

DISCONNECT_CHECK_SECONDS = 0.25  # how soon a vanished client is noticed while the graph works
SHUTDOWN_SECONDS = 3.0  # how long a stopping server lets open responses finish
MAX_HEALTH_TIMEOUT_S = 60.0  # a health check holds one worker thread this long at most


class Engine(Protocol):
    def start(self, utterance_id: str, request: Any, received_at: float, deliver: Deliver) -> None: ...

    def cancel(self, utterance_id: str) -> None: ...


class VoiceInfo(Protocol):
    name: str
    prompt_text: str
    prompt_language: str
    aliases: tuple[str, ...]  # other names the API accepts for it (OpenAI's alloy ...)


def create_app(
    engine: Engine, voices: dict[str, VoiceInfo], config: ServerConfig = ServerConfig(), development_model: bool = False
) -> web.Application:
    api = SpeechApi(engine, voices, config, development_model)
    cors = CorsPolicy.parse(config.cors_origins)
    app = web.Application(middlewares=[json_errors, cors.middleware], client_max_size=1024 * 1024)
    app.on_response_prepare.append(cors.on_prepare)
    app.add_routes(
        [
            web.get("/", api.page),
            web.get("/v1/models", api.models),
            web.get("/v1/models/{model}", api.model),
            web.get("/v1/audio/voices", api.voices_list),
            web.post("/v1/audio/speech", api.speech),
            web.get("/v1/requests/last", api.last_request),
            web.get("/v1/requests/{id}", api.request_metrics),
            web.get("/health", api.health),
        ]
    )
    return app


@web.middleware
async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every refusal as OpenAI's error JSON, including aiohttp's own 404/405/413 and our own bugs."""
    try:
        return await handler(request)
    except ApiError as e:
        return web.json_response(e.body(), status=e.status, headers=e.headers)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        kind = "invalid_request_error" if e.status < 500 else "server_error"
        error = ApiError(
            e.status,
            f"{request.method} {ascii(request.path)[1:-1]}: {e.reason}",
            None,
            e.reason.lower().replace(" ", "_"),
            kind,
        )
        return web.json_response(error.body(), status=e.status)
    except (asyncio.CancelledError, ConnectionError):
        raise  # the client left: nobody to answer
    except Exception as e:
        # A 500 still in the API's shape, and the request's route in the graph is closed by the
        # handler's own cleanup; the server goes on serving the next request.
        log.exception("%s %s failed", request.method, ascii(request.path))
        error = ApiError(500, f"internal error: {type(e).__name__}", None, "internal_error", "server_error")
        return web.json_response(error.body(), status=500)


class SpeechApi:
    def __init__(self, engine: Engine, voices: dict[str, VoiceInfo], config: ServerConfig, development_model: bool):
        self.engine = engine
        self.voices = voices
        self.config = config
        self.development_model = development_model
        self.limits = Limits(max_input_chars=config.max_input_chars)
        self.aliases = {alias: v.name for v in voices.values() for alias in getattr(v, "aliases", ())}
        self.metrics = MetricsLog()
        self.active = 0

    async def page(self, request: web.Request) -> web.Response:
        html = resources.files(__package__).joinpath("static/index.html").read_text(encoding="utf-8")
        return web.Response(text=html, content_type="text/html", charset="utf-8")

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [_model(i) for i in (MODEL_ID, *MODEL_ALIASES)]})

    async def model(self, request: web.Request) -> web.Response:
        name = request.match_info["model"]
        if name not in (MODEL_ID, *MODEL_ALIASES):
            raise ApiError(404, f"model {name!r} does not exist", "model", "model_not_found")
        return web.json_response(_model(name))

    async def voices_list(self, request: web.Request) -> web.Response:
        """Our list (``data``, read by the page) and Kokoro-FastAPI's (``voices``: ``{id, name}``
        objects, or bare names with ``?legacy=true``, as Kokoro-FastAPI answers) in one body."""
        ordered = sorted(self.voices.values(), key=lambda v: v.name)
        data = [
            {
                "id": v.name,
                "object": "voice",
                "name": v.name,
                "language": v.prompt_language,
                "reference_free": not v.prompt_text.strip(),
                "aliases": sorted(getattr(v, "aliases", ())),
            }
            for v in ordered
        ]
        legacy = request.query.get("legacy", "").lower() in ("1", "true")
        kokoro = [v.name for v in ordered] if legacy else [{"id": v.name, "name": v.name} for v in ordered]
        return web.json_response(
            {"object": "list", "data": data, "voices": kokoro, "development_model": self.development_model}
        )

    async def last_request(self, request: web.Request) -> web.Response:
        last = self.metrics.last()
        if last is None:
            raise ApiError(404, "no speech request has been made yet", None, "not_found")
        return web.json_response(last.as_json())

    async def health(self, request: web.Request) -> web.Response:
        """200 when a probe passed every node to the vocoder and back within ``?timeout=`` seconds
        (default 10, at most 60), else 503 with what failed; 503 at once while the graph is known
        not to serve (a node restarting or gone)."""
        check = getattr(self.engine, "check_health", None)
        if check is None:
            raise ApiError(404, "this server's engine has no health check", None, "not_found")
        try:
            timeout_s = float(request.query.get("timeout", health.DEFAULT_TIMEOUT_S))
        except ValueError:
            raise ApiError(400, "timeout must be a number of seconds", "timeout", "invalid_value") from None
        if not 0 < timeout_s <= MAX_HEALTH_TIMEOUT_S:
            raise ApiError(400, f"timeout must be in (0, {MAX_HEALTH_TIMEOUT_S:g}] seconds", "timeout", "invalid_value")
        down = getattr(self.engine, "unavailable", lambda: None)()
        if down is not None:
            return web.json_response({"ok": False, "error": down[0]}, status=503)
        report = await asyncio.get_running_loop().run_in_executor(None, check, timeout_s)
        return web.json_response(report, status=200 if report["ok"] else 503)

    async def request_metrics(self, request: web.Request) -> web.Response:
        found = self.metrics.get(request.match_info["id"])
        if found is None:
            raise ApiError(404, f"no recent request {request.match_info['id']!r}", "id", "not_found")
        return web.json_response(found.as_json())

    async def speech(self, request: web.Request) -> web.StreamResponse:
        received_at = time.time()
        body = parse_json(await request.read(), request.charset)
        speech = parse_speech_request(body, sorted(self.voices), self.limits, self.aliases)
        unavailable = getattr(self.engine, "unavailable", lambda: None)()
        if unavailable is not None:
            reason, retry_after = unavailable
            headers = {} if retry_after is None else {"Retry-After": str(max(1, math.ceil(retry_after)))}
            raise ApiError(503, reason, None, "service_unavailable", "server_error", headers)
        if self.active >= self.config.max_active_requests:
            raise ApiError(
                429,
                f"the server is busy ({self.active} requests in progress); retry shortly",
                None,
                "too_many_requests",
                "rate_limit_error",
            )
        self.active += 1
        try:
            return await self.stream(request, speech, received_at)
        finally:
            self.active -= 1

    async def stream(self, request: web.Request, speech: SpeechRequest, received_at: float) -> web.StreamResponse:
        utterance_id = m.new_utterance_id()
        metrics = RequestMetrics(utterance_id, speech.voice, speech.response_format, len(speech.input), received_at)
        self.metrics.add(metrics)
        events: asyncio.Queue[AudioEvent] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        try:
            self.engine.start(
                utterance_id, speech, received_at, lambda e: loop.call_soon_threadsafe(events.put_nowait, e)
            )
        except Exception:
            metrics.finish("failed", "the request could not be sent into the graph")
            self.engine.cancel(utterance_id)  # never leave its route open
            raise
        log.info(
            "request %s: %d characters, voice %r, %s%s",
            utterance_id,
            len(speech.input),
            speech.voice,
            speech.response_format,
            " as SSE" if speech.stream_format == "sse" else "",
        )
        encoder = StreamEncoder(speech.response_format, self.config.sample_rate, speech.kokoro.gain)
        out = Output(request, speech)
        errors: list[str] = []
        try:
            while True:
                event = await self.next_event(request, events, metrics)
                if event.error:
                    errors.append(event.error)
                if len(event.samples) and out.response is None:
                    metrics.first_audio()
                    await out.start(self.headers(utterance_id, encoder, metrics))
                if out.response is not None:
                    if len(event.samples):
                        await out.audio(encoder.encode(event.samples, event.sample_rate))
                        metrics.audio_seconds += len(event.samples) / event.sample_rate
                    if event.final:
                        await out.audio(encoder.finish())
                if event.final:
                    break
        except (ConnectionError, asyncio.CancelledError):
            metrics.finish("cancelled", "the client disconnected")
            self.engine.cancel(utterance_id)
            encoder.close()
            log.info("request %s: client disconnected; utterance cancelled", utterance_id)
            raise
        except Exception as e:  # ApiError (a timeout), or a fault of ours: the route must not stay open
            message = e.message if isinstance(e, ApiError) else f"internal error: {type(e).__name__}: {e}"
            metrics.finish("failed", message)
            self.engine.cancel(utterance_id)
            encoder.close()
            if not out.sent_headers:
                raise
            log.error("request %s: %s; stream aborted", utterance_id, message)
            await out.fail(message, e.code if isinstance(e, ApiError) and e.code else "internal_error")
            return out.response
        if out.response is None:  # the graph ended the utterance without any audio
            metrics.finish("failed", "; ".join(errors) or "no audio was produced")
            raise ApiError(
                500, f"speech synthesis failed: {metrics.error}", "input", "synthesis_failed", "server_error"
            )
        metrics.finish("failed" if errors else "completed", "; ".join(errors))
        log.info(
            "request %s: %.2f s of audio, TTFA %.3f s, RTF %s%s",
            utterance_id,
            metrics.audio_seconds,
            metrics.ttfa_seconds,
            f"{metrics.rtf:.3f}" if metrics.rtf else "-",
            f", errors: {metrics.error}" if errors else "",
        )
        if errors:  # part of the text is missing
            if not out.sent_headers:  # stream: false: nothing sent yet, so a plain JSON error
                raise ApiError(
                    500, f"speech synthesis failed: {metrics.error}", "input", "synthesis_failed", "server_error"
                )
            await out.fail(metrics.error, "synthesis_failed")
            return out.response
        await out.end(metrics.audio_seconds)
        return out.response

    def headers(self, utterance_id: str, encoder: StreamEncoder, metrics: RequestMetrics) -> dict[str, str]:
        return {
            "Content-Type": encoder.content_type,
            "X-Request-Id": utterance_id,
            "X-Sample-Rate": str(encoder.sample_rate),
            "X-Time-To-First-Audio": f"{metrics.ttfa_seconds:.4f}",
            "X-Development-Model": "true" if self.development_model else "false",
            "X-Audio-Format": encoder.response_format,
            "Cache-Control": "no-store",
        }

    async def next_event(self, request: web.Request, events: asyncio.Queue, metrics: RequestMetrics) -> AudioEvent:
        """The next audio event; raises ConnectionResetError when the client left meanwhile."""
        deadline = time.monotonic() + self.config.chunk_timeout_seconds
        while True:
            try:
                return await asyncio.wait_for(events.get(), DISCONNECT_CHECK_SECONDS)
            except TimeoutError:
                pass
            if request.transport is None or request.transport.is_closing():
                raise ConnectionResetError("client disconnected")
            if time.monotonic() > deadline:
                raise ApiError(
                    504,
                    f"no audio from the dataflow for {self.config.chunk_timeout_seconds:g} s",
                    None,
                    "timeout",
                    "server_error",
                )


def parse_json(raw: bytes, charset: str | None) -> Any:
    """The request body as JSON, or a 400 saying why not."""
    try:
        text = raw.decode(charset or "utf-8")
    except LookupError:
        raise ApiError(400, f"unknown charset {ascii(charset)}", None, "invalid_json") from None
    except UnicodeDecodeError as e:
        raise ApiError(400, f"the request body is not valid {charset or 'utf-8'}: {e}", None, "invalid_json") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise ApiError(400, "the request body is not valid JSON: nested too deeply", None, "invalid_json") from None
    except ValueError as e:  # JSONDecodeError, and Python's refusal of integers over 4300 digits
        raise ApiError(400, f"the request body is not valid JSON: {e}", None, "invalid_json") from None


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "dora-gpt-sovits"}


def _abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()


class Output:
    """Where one request's encoded audio goes: raw bytes or SSE events, streamed or (Kokoro's
    ``stream: false``) held until the end and sent with a Content-Length."""

    def __init__(self, request: web.Request, speech: SpeechRequest):
        self.request = request
        self.events = speech.stream_format == "sse"
        self.streamed = speech.kokoro.stream
        self.input_chars = len(speech.input)
        self.response: web.StreamResponse | None = None
        self.held = bytearray()

    @property
    def sent_headers(self) -> bool:
        return self.response is not None and self.response.prepared

    async def start(self, headers: dict[str, str]) -> None:
        if self.events:
            headers = headers | {"Content-Type": sse.CONTENT_TYPE}
        self.response = web.StreamResponse(headers=headers)
        if not self.streamed:
            return
        # No Content-Length (the length is unknown until the end): aiohttp then streams HTTP/1.1 in
        # chunks and HTTP/1.0, which has no chunked encoding, up to the connection's close.
        if self.request.version < HttpVersion11:
            self.response.force_close()
            self.response.headers["Connection"] = "close"
        await self.response.prepare(self.request)

    async def audio(self, data: bytes) -> None:
        await self.send(sse.audio_delta(data) if self.events else data)

    async def end(self, audio_seconds: float) -> None:
        if self.events:
            await self.send(sse.audio_done(self.input_chars, audio_seconds))
        if not self.streamed:
            self.response.content_length = len(self.held)
            await self.response.prepare(self.request)
            await self.response.write(bytes(self.held))
        await self.response.write_eof()

    async def fail(self, message: str, code: str) -> None:
        """After audio went out: an SSE stream says so in an error event and ends without ``done``;
        raw audio is cut (an aborted connection), so a client never takes part of it for all of it."""
        if self.events:
            await self.response.write(sse.error_event(message, code))
            await self.response.write_eof()
        else:
            _abort(self.request)

    async def send(self, data: bytes) -> None:
        if not data:
            return
        if self.streamed:
            await self.response.write(data)
        else:
            self.held += data


class HttpServer:
    """The app served from its own thread and event loop (the node's thread keeps dora's loop)."""

    def __init__(self, app: web.Application, host: str, port: int):
        self.app, self.host, self.port = app, host, port
        self.loop = asyncio.new_event_loop()
        # When dora stops the node, requests still streaming get a few seconds, not aiohttp's 60,
        # so the process ends with its graph instead of living on with its port already closed.
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_SECONDS)
        self.thread = threading.Thread(target=self.loop.run_forever, name="http-server", daemon=True)

    def start(self) -> int:
        """Bind and serve; returns the port (useful with port 0)."""
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, self.host, self.port)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # aiohttp has no public accessor for it
        self.thread.start()
        return self.port

    def stop(self) -> None:
        if self.thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(timeout=30)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=30)
