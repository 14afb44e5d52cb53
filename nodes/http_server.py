"""http-server node: an OpenAI-compatible speech API and a web page in front of the dataflow.

Output ``text`` (Utf8[1] per request; metadata utterance_id, voice, language, text_received_at and
the request's top_k/top_p/temperature/speed) and ``control`` (Utf8[1] "stop" + utterance_id when a
client disconnects). Input ``audio`` (from the vocoder): each chunk is routed by utterance_id to the
HTTP response waiting for it and streamed on at once; the response ends with the utterance's final
chunk. Input ``frontend_control`` (text-frontend's ``control``): only to hear of the frontend's
restarts at once and of its return (openai_api/bridge.py). While a node restarts, speech requests
get a 503 with Retry-After. The server is the graph's audio consumer; it runs until ``dora stop``.

Endpoints: ``POST /v1/audio/speech``, ``GET /v1/models``, ``GET /v1/audio/voices``,
``GET /v1/requests/last`` (server-side TTFA/RTF), ``GET /`` (the page). Environment:
``GSV_HTTP_HOST`` (127.0.0.1), ``GSV_HTTP_PORT`` (8880), ``GSV_HTTP_SAMPLE_RATE`` (24000),
``GSV_HTTP_MAX_INPUT_CHARS`` (4096), ``GSV_HTTP_MAX_REQUESTS`` (8), ``GSV_HTTP_TIMEOUT`` (300 s),
``GSV_HTTP_RESTART_GRACE`` (120 s: the longest 503 after a node restart that gives no sign of its end),
``GSV_HTTP_CORS_ORIGINS`` (unset: no cross-origin access); voices come from the same registry as the
reference node (``GSV_VOICES``, ``GSV_REF_AUDIO``, the model directory's ``voices.yml``, whose
``aliases`` give voices OpenAI's names). Formats, SSE and Kokoro fields: docs/openai-api.md.
"""

from __future__ import annotations

import logging
import os

from dora_gpt_sovits.model_paths import ModelsMissing, resolve
from dora_gpt_sovits.node_runtime import connect, fail
from dora_gpt_sovits.openai_api.app import HttpServer, create_app
from dora_gpt_sovits.openai_api.bridge import GraphBridge
from dora_gpt_sovits.openai_api.config import ServerConfig
from dora_gpt_sovits.settings import HTTPSettings, from_env_or_exit
from dora_gpt_sovits.voices import VoiceError, load_registry, voice_aliases

log = logging.getLogger("gsv.http-server")


def main() -> None:
    env = dict(os.environ)
    config = ServerConfig.from_settings(from_env_or_exit(HTTPSettings, env))
    try:
        paths = resolve(env)
        voices = load_registry(env, model_dir=paths.model_dir)
        aliases = voice_aliases(voices)  # refuses an alias given twice or naming a voice
    except (ModelsMissing, VoiceError) as e:
        fail(str(e))
    bridge = GraphBridge(restart_grace_seconds=config.restart_grace_seconds)
    server = HttpServer(
        create_app(bridge, voices, config, development_model=paths.development), config.host, config.port
    )
    # Joining the graph returns once every node has loaded its model, so the port opens when the
    # whole graph can serve: clients never wait on a request accepted during startup.
    node = connect()
    try:
        port = server.start()
    except OSError as e:
        fail(f"cannot listen on {config.host}:{config.port} ({e}); set GSV_HTTP_HOST/GSV_HTTP_PORT")
    log.info(
        "OpenAI-compatible speech API on http://%s:%d/v1 (page: http://%s:%d/), voices %s, aliases %s",
        config.host,
        port,
        config.host,
        port,
        sorted(voices),
        aliases,
    )
    try:
        bridge.run(node)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
