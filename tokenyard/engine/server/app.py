"""The OpenAI-compatible HTTP application.

`build_app(engine, ...)` returns a FastAPI app serving `/v1/chat/completions`, `/v1/completions`,
`/v1/models`, `/tokenize`, `/detokenize`, `/health` and `/metrics` on top of one `EngineLoop`.

Every request is validated completely (schema, model name, template, context length, sampling
parameters) before the engine sees it; a refusal is a 4xx with an OpenAI error body and the engine
is untouched. A client that goes away, mid-stream or while waiting for a non-streamed answer,
aborts its requests, which returns their pages and slots.

Owns the routes, the API key check and the error bodies; the endpoints' work is in chat.py and
completions.py.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from tokenyard.engine.server.chat import create_chat_completion, render_chat
from tokenyard.engine.server.completions import create_completion
from tokenyard.engine.server.engine_loop import EngineLoop
from tokenyard.engine.server.metrics import Metrics
from tokenyard.engine.server.protocol import (
    APIError,
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    TokenizeRequest,
)
from tokenyard.engine.server.serving import ServerState, check_alive, check_model, check_token_ids
from tokenyard.engine.server.tool_parsers import ToolParser

log = logging.getLogger("tokenyard.server")


def build_app(
    engine,
    model_name: str,
    max_model_len: int,
    api_key: str | None = None,
    tool_parser: ToolParser | None = None,
) -> FastAPI:
    metrics = Metrics(model_name)
    state = ServerState(
        loop=EngineLoop(engine, metrics),
        tokenizer=engine.tokenizer,
        model_name=model_name,
        max_model_len=max_model_len,
        tool_parser=tool_parser,
        metrics=metrics,
        api_key=api_key,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        state.loop.start()
        yield
        state.loop.stop()

    app = FastAPI(title="tokenyard", lifespan=lifespan)
    app.state.server = state
    _install_error_handlers(app)

    @app.middleware("http")
    async def check_api_key(request: Request, call_next):
        guarded = request.url.path.startswith("/v1") or request.url.path in ("/tokenize", "/detokenize")
        if state.api_key and guarded:
            given = request.headers.get("authorization", "")
            if not secrets.compare_digest(given.encode(), f"Bearer {state.api_key}".encode()):
                return error_response(APIError(
                    "Incorrect API key provided.", status_code=401, code="invalid_api_key",
                ))
        return await call_next(request)

    @app.get("/health")
    async def health() -> Response:
        check_alive(state)
        return JSONResponse({"status": "ok"})

    @app.get("/metrics")
    async def get_metrics() -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models() -> dict:
        return {
            "object": "list",
            "data": [{
                "id": state.model_name, "object": "model", "created": state.created,
                "owned_by": "tokenyard", "max_model_len": state.max_model_len,
            }],
        }

    @app.post("/tokenize")
    async def tokenize(body: TokenizeRequest) -> dict:
        check_model(state, body.model)
        if body.messages is not None:
            tokens = render_chat(state, body.messages, None, body.add_generation_prompt)
        else:
            tokens = state.tokenizer.encode(body.prompt)
        return {"count": len(tokens), "max_model_len": state.max_model_len, "tokens": tokens}

    @app.post("/detokenize")
    async def detokenize(body: DetokenizeRequest) -> dict:
        check_model(state, body.model)
        check_token_ids(state, body.tokens, "tokens")
        return {"prompt": state.tokenizer.decode(body.tokens, skip_special_tokens=False)}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        return await create_chat_completion(state, body, request)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Response:
        return await create_completion(state, body, request)

    return app


def error_response(error: APIError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status_code)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError):
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        first = exc.errors()[0]
        where = [str(part) for part in first.get("loc", ()) if part != "body"]
        param = where[0] if where else None  # the request field; the message has the full path
        kind, path = first.get("type"), ".".join(where)
        reason = first.get("msg", "").removeprefix("Value error, ")
        if kind == "json_invalid":  # its loc is a character offset, not a field
            message = f"the request body is not valid JSON: {first.get('ctx', {}).get('error', reason)}"
            param = None
        elif kind == "extra_forbidden":
            message = f"Unrecognized request argument supplied: {where[-1]}"
        elif kind == "value_error":  # a validator's own message, which names what it checks
            message = f"{path}: {reason}" if path else reason
        elif not where:
            message = "the request body must be a JSON object"
        else:
            message = f"{path}: {reason}"
            if "input" in first and kind != "missing":
                message += f" (got {json.dumps(first['input'], default=str)[:200]})"
        return error_response(APIError(message, status_code=400, param=param))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("%s %s failed", request.method, request.url.path)
        return error_response(APIError(f"{type(exc).__name__}: {exc}", status_code=500, type="server_error"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return error_response(APIError(message, status_code=exc.status_code, type=kind))
