"""The OpenAI-compatible HTTP API (FastAPI): completions, chat, models, embeddings, classification,
CLIP image scoring, feedback, health and Prometheus metrics. Bad requests get OpenAI's error shape,
`{"error": {"message", "type", "param", "code"}}`, with a 4xx status, and the server keeps serving."""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import struct
import time
import uuid
from typing import Any, Optional

from fastapi import FastAPI, Request as HttpRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse

from zoo.errors import ZooError
from zoo.families import Capability, can
from zoo.generation import Completion, Request
from zoo.serve.engine import Batcher, Job
from zoo.serve.model import ServedModel
from zoo.serve.monitor import Feedback, Metrics, RequestLog
from zoo.serve.schemas import (ChatBody, ClassifyBody, CompletionBody, EmbeddingBody, FeedbackBody, ImageScoreBody,
                               Sampled)

OPEN_PATHS = ("/health", "/metrics")  # probes and scrapes need no key


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: Optional[str] = None, code: Optional[str] = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status)


def _validation_error(err: RequestValidationError) -> ApiError:
    first = err.errors()[0]
    if first.get("type") == "json_invalid":
        return ApiError(400, f"the body is not valid JSON ({first.get('ctx', {}).get('error', 'parse error')})")
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    if first.get("type") == "missing":
        return ApiError(400, f"missing required field '{param}'", param)
    return ApiError(400, f"'{param}': {first.get('msg')}" if param else str(first.get("msg")), param)


class Server:
    """The app's state: the model, the batcher, the log, the metrics, the feedback file."""

    def __init__(self, served: ServedModel, *, api_key: Optional[str] = None, max_batch_size: int = 16,
                 wait_ms: float = 5.0, log_path: Optional[str] = None, log_content: bool = False,
                 feedback_path: str = "feedback.jsonl", max_body_bytes: int = 1 << 20):
        self.served, self.api_key, self.max_body = served, api_key, max_body_bytes
        self.metrics = Metrics()
        self.log = RequestLog(log_path, log_content)
        self.feedback = Feedback(feedback_path)
        self.batcher = Batcher(served.model, served.tokenizer, max_batch_size, wait_ms,
                               observe_batch=self.metrics.batch_size.observe) if served.generates else None

    # ---------------------------------------------------------------- checks
    def check_model(self, name: str) -> None:
        if name != self.served.name:
            raise ApiError(404, f"the model '{name}' does not exist; this server serves '{self.served.name}'",
                           "model", "model_not_found")

    def needs(self, ok: bool, what: str) -> None:
        if not ok:
            raise ApiError(400, f"the model '{self.served.name}' (a {self.served.family} model) does not {what}",
                           "model")

    def requests_for(self, body: Sampled, prompts: list[str], default_max: Optional[int],
                     extra_stop: tuple[str, ...] = ()) -> list[Request]:
        """Validated generation requests (one per prompt), or an ApiError naming the bad field."""
        self.needs(self.batcher is not None, "generate text")
        if body.n != 1:
            raise ApiError(400, "only n=1 is supported", "n")
        t = 1.0 if body.temperature is None else float(body.temperature)
        if not 0 <= t <= 2:
            raise ApiError(400, f"temperature {t} is outside [0, 2]", "temperature")
        p = 1.0 if body.top_p is None else float(body.top_p)
        if not 0 < p <= 1:
            raise ApiError(400, f"top_p {p} is outside (0, 1]", "top_p")
        stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        if len(stop) > 4:
            raise ApiError(400, "at most 4 stop sequences", "stop")
        out = []
        for prompt in prompts:
            ids = self.served.tokenizer.encode(prompt).ids
            if not ids:
                raise ApiError(400, "the prompt encodes to no tokens", "prompt")
            room = self.served.context
            if room is not None and self.served.continues_prompt:
                room -= len(ids)
                if room <= 0:
                    raise ApiError(400, f"the prompt has {len(ids)} tokens; this model's context is "
                                        f"{self.served.context}", "prompt", "context_length_exceeded")
            n = body.max_tokens if body.max_tokens is not None else (min(default_max, room or default_max)
                                                                    if default_max else room)
            if n is None or n < 1:
                raise ApiError(400, f"max_tokens must be at least 1, got {n}", "max_tokens")
            if room is not None and n > room:
                raise ApiError(400, f"max_tokens {n} is beyond the context: {room} tokens are left after the prompt "
                                    f"(context {self.served.context})", "max_tokens", "context_length_exceeded")
            out.append(Request(ids, n, t, None, p if p < 1 else None, body.seed, tuple(stop) + extra_stop))
        return out


class ClientGone(Exception):
    """The client of a streamed response disconnected."""


async def _completions(job: Job, request: Optional[HttpRequest] = None):
    """(delta, Completion | None) events of one job, until its Completion. With `request` (streaming),
    raises ClientGone as soon as its client has disconnected: uvicorn drops writes to a closed connection
    silently, so waiting for a failed send could decode the whole request for nobody."""
    getter: Optional[asyncio.Future] = None
    while True:
        getter = getter or asyncio.ensure_future(job.events.get())
        finished, _ = await asyncio.wait({getter}, timeout=0.25)
        if request is not None and await request.is_disconnected():
            getter.cancel()
            raise ClientGone
        if not finished:
            continue
        event, getter = getter.result(), None
        if isinstance(event, Exception):
            status = 400 if isinstance(event, (ZooError, ValueError)) else 500
            raise ApiError(status, str(event), kind="invalid_request_error" if status == 400 else "server_error")
        yield event
        if event[1] is not None:
            return


def build_app(server: Server) -> FastAPI:
    app = FastAPI(title="zoo", docs_url=None, redoc_url=None)
    app.state.server = server
    s = server

    @app.exception_handler(ApiError)
    async def api_error(request: HttpRequest, err: ApiError):
        request.state.error = err.message
        return err.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: HttpRequest, err: RequestValidationError):
        e = _validation_error(err)
        request.state.error = e.message
        return e.response()

    @app.middleware("http")
    async def guard_and_log(request: HttpRequest, call_next):
        start = time.perf_counter()
        request.state.record = {"id": None, "prompt_tokens": 0, "completion_tokens": 0}
        request.state.error = None
        path = request.url.path
        response = _refuse(s, request)
        if response is None:
            response = await call_next(request)
        if not getattr(request.state, "streaming", False):
            _finish(s, request, path, response.status_code, start)
        else:
            request.state.log_done = lambda status: _finish(s, request, path, status, start)
        return response

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": s.served.name, "family": s.served.family,
                "quantization": s.served.quantization}  # a zoo.compress.quantize scheme, or None (float)

    @app.get("/metrics")
    async def metrics():
        if s.batcher is not None:
            s.metrics.queue.set(s.batcher.queued())
        return Response(s.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": s.served.name, "object": "model", "created": 0, "owned_by": "zoo"}]}

    @app.post("/v1/completions")
    async def completions(body: CompletionBody, request: HttpRequest):
        s.check_model(body.model)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not prompts:
            raise ApiError(400, "'prompt' is an empty list", "prompt")
        reqs = s.requests_for(body, prompts, 16)
        echo = body.echo and s.served.continues_prompt
        return await _respond(s, request, body, reqs, prompts, "text_completion", "cmpl", echo)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatBody, request: HttpRequest):
        s.check_model(body.model)
        if body.max_completion_tokens is not None and body.max_tokens is None:
            body.max_tokens = body.max_completion_tokens
        try:
            prompt = s.served.chat.render([{"role": m.role, "content": m.text()} for m in body.messages])
        except Exception as err:
            raise ApiError(400, f"the chat template failed on these messages: {err}", "messages") from None
        reqs = s.requests_for(body, [prompt], 256, s.served.chat.stop)
        return await _respond(s, request, body, reqs, [prompt], "chat.completion", "chatcmpl", False)

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingBody, request: HttpRequest):
        s.check_model(body.model)
        s.needs(can(s.served.model, Capability.FEATURES), "give embeddings")
        texts = [body.input] if isinstance(body.input, str) else body.input
        if not texts or any(not t for t in texts):
            raise ApiError(400, "'input' must be a non-empty string or list of non-empty strings", "input")
        if body.encoding_format not in ("float", "base64"):
            raise ApiError(400, "encoding_format must be 'float' or 'base64'", "encoding_format")
        vectors, n = await asyncio.to_thread(s.served.embed, texts)
        request.state.record["prompt_tokens"] = n
        pack = (lambda v: base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode()) \
            if body.encoding_format == "base64" else (lambda v: v)
        data = [{"object": "embedding", "index": i, "embedding": pack(v)} for i, v in enumerate(vectors)]
        return {"object": "list", "data": data, "model": s.served.name, "usage": {"prompt_tokens": n, "total_tokens": n}}

    @app.post("/v1/classifications")
    async def classify(body: ClassifyBody, request: HttpRequest):
        s.check_model(body.model)
        s.needs(s.served.classifier is not None, "classify (it is not a checkpoint of a fine-tuned classifier)")
        texts = [body.input] if isinstance(body.input, str) else body.input
        if not texts:
            raise ApiError(400, "'input' is an empty list", "input")
        probs, n = await asyncio.to_thread(s.served.classify, texts)
        request.state.record["prompt_tokens"] = n
        data = [{"index": i, "label": max(p, key=p.get), "probabilities": p} for i, p in enumerate(probs)]
        return {"object": "list", "data": data, "model": s.served.name, "usage": {"prompt_tokens": n}}

    @app.post("/v1/image_scores")
    async def image_scores(body: ImageScoreBody):
        s.check_model(body.model)
        s.needs(can(s.served.model, Capability.IMAGE_TEXT), "score images against captions")
        try:
            probs = await asyncio.to_thread(s.served.score_image, body.image, body.captions)
        except ValueError as err:
            raise ApiError(400, str(err), "image") from None
        data = [{"index": i, "caption": c, "probability": p} for i, (c, p) in enumerate(zip(body.captions, probs))]
        return {"object": "list", "data": data, "best": body.captions[max(range(len(probs)), key=probs.__getitem__)]}

    @app.post("/v1/feedback")
    async def feedback(body: FeedbackBody):
        record = s.feedback.add(body.id, body.rating, body.correction)
        if record is None:
            raise ApiError(404, f"no recent completion has id '{body.id}'", "id")
        return {"object": "feedback", "id": body.id, "stored": True}

    return app


def _refuse(s: Server, request: HttpRequest) -> Optional[JSONResponse]:
    """401 without the key, 413 for a body over the limit; None when the request may go on."""
    if s.api_key and request.url.path not in OPEN_PATHS:
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {s.api_key}".encode()):
            request.state.error = "missing or wrong API key"
            return ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'", code="invalid_api_key",
                            kind="authentication_error").response()
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > s.max_body:
        request.state.error = "body too large"
        return ApiError(413, f"the body has {length} bytes; the limit is {s.max_body}").response()
    return None


def _finish(s: Server, request: HttpRequest, path: str, status: int, start: float) -> None:
    latency = time.perf_counter() - start
    r = request.state.record
    s.metrics.requests.labels(path, str(status)).inc()
    s.metrics.latency.labels(path).observe(latency)
    s.metrics.tokens.inc(r.get("completion_tokens", 0))
    s.metrics.prompt_tokens.inc(r.get("prompt_tokens", 0))
    s.log.write({"id": r.get("id"), "time": time.time(), "endpoint": path, "status": status,
                 "latency_s": round(latency, 6), "prompt_tokens": r.get("prompt_tokens", 0),
                 "completion_tokens": r.get("completion_tokens", 0), "error": request.state.error,
                 **{k: r[k] for k in ("prompt", "completion") if k in r}})


def _choice(kind: str, i: int, text: Optional[str], reason: Optional[str], delta: bool) -> dict[str, Any]:
    if kind == "text_completion":
        return {"index": i, "text": text or "", "logprobs": None, "finish_reason": reason}
    key = "delta" if delta else "message"
    content = {"role": "assistant", "content": text} if not delta or text is not None else {}
    return {"index": i, key: content, "logprobs": None, "finish_reason": reason}


def _usage(done: list[Completion]) -> dict[str, int]:
    p, c = sum(len(d.prompt_ids) for d in done), sum(len(d.token_ids) for d in done)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


async def _respond(s: Server, request: HttpRequest, body: Sampled, reqs: list[Request], prompts: list[str],
                   kind: str, prefix: str, echo: bool):
    rid = f"{prefix}-{uuid.uuid4().hex[:24]}"
    request.state.record.update(id=rid, prompt_tokens=sum(len(r.prompt) for r in reqs), prompt="\n".join(prompts))
    jobs = [s.batcher.submit(r) for r in reqs]
    base = {"id": rid, "object": kind, "created": int(time.time()), "model": s.served.name}
    if body.stream:
        request.state.streaming = True
        return StreamingResponse(_stream(s, request, jobs, base, kind, prompts, echo, body),
                                 media_type="text/event-stream")
    try:
        done = []
        for job in jobs:
            async for _, completion in _completions(job):
                if completion is not None:
                    done.append(completion)
    finally:
        for job in jobs:
            job.cancelled.set()  # a client that left frees its rows; a no-op for finished ones
    texts = [(p + d.text if echo else d.text) for p, d in zip(prompts, done)]
    _remember(s, request, rid, prompts, texts, done)
    return {**base, "choices": [_choice(kind, i, t, d.finish_reason, False) for i, (t, d) in enumerate(zip(texts, done))],
            "usage": _usage(done)}


def _remember(s: Server, request: HttpRequest, rid: str, prompts, texts, done) -> None:
    request.state.record.update(completion_tokens=sum(len(d.token_ids) for d in done), completion="\n".join(texts))
    s.feedback.remember(rid, "\n".join(prompts), "\n".join(texts))


async def _stream(s: Server, request: HttpRequest, jobs: list[Job], base: dict, kind: str, prompts, echo, body):
    chunk_kind = "chat.completion.chunk" if kind == "chat.completion" else kind
    sse = lambda payload: f"data: {json.dumps(payload)}\n\n"  # noqa: E731
    status, done, texts = 200, [], []
    try:
        for i, job in enumerate(jobs):
            text = prompts[i] if echo else ""
            if kind == "chat.completion":
                yield sse({**base, "object": chunk_kind, "choices": [_choice(kind, i, "", None, True)]})
            elif echo:
                yield sse({**base, "object": chunk_kind, "choices": [_choice(kind, i, prompts[i], None, True)]})
            async for delta, completion in _completions(job, request):
                text += delta
                if delta:
                    yield sse({**base, "object": chunk_kind, "choices": [_choice(kind, i, delta, None, True)]})
                if completion is not None:
                    done.append(completion)
                    texts.append(text)
                    yield sse({**base, "object": chunk_kind,
                               "choices": [_choice(kind, i, None, completion.finish_reason, True)]})
        if (body.stream_options or {}).get("include_usage"):
            yield sse({**base, "object": chunk_kind, "choices": [], "usage": _usage(done)})
        yield "data: [DONE]\n\n"
    except ApiError as err:
        status, request.state.error = err.status, err.message
        yield sse({"error": {"message": err.message, "type": err.kind, "param": None, "code": None}})
    except ClientGone:
        status, request.state.error = 499, "client disconnected"
    except BaseException:
        status, request.state.error = 499, "client disconnected"
        raise
    finally:
        for job in jobs:
            job.cancelled.set()
        _remember(s, request, base["id"], prompts, texts, done)
        request.state.record["completion_tokens"] = sum(job.generated for job in jobs)
        request.state.log_done(status)
