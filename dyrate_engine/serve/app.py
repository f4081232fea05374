"""The OpenAI-compatible HTTP server: ``POST /v1/chat/completions`` (whole answers or SSE
streams), ``GET /v1/models``, ``GET /health`` and ``GET /metrics``, over the engine's continuous
batching scheduler stepped by a :class:`~dyrate_engine.serve.loop.ServingLoop` thread.

Each response carries a ``dyrate`` extension field (the policy, the visual tokens kept, the FLOPs
saved); a request may name its own policy in ``dyrate_policy`` (it must prune from the server's
layer K). Bad input gets an OpenAI-style error with a 4xx status and the server keeps serving;
a full queue gets 429.
"""
from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import time
import uuid

from fastapi import FastAPI, Request as HttpRequest
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from ..engine.handles import QueueFull, Request
from ..policies.spec import parse_policy
from .loop import ServingLoop
from .metrics import Metrics
from .protocol import ApiError, ChatRequest, ImageRules, parse_chat


class ChatServer:
    """The server's state: the engine, its scheduler and loop, the policies by spelling."""

    def __init__(self, engine, *, model_name: str, policy: str = "dense", max_batch: int = 8,
                 max_queue: int = 64, rules: ImageRules | None = None,
                 default_max_tokens: int = 64, batching: str = "continuous"):
        self.engine, self.model_name, self.default_policy = engine, model_name, policy
        self.rules, self.default_max_tokens = rules or ImageRules(), default_max_tokens
        self._policies = {}
        prune_layer = self.policy(policy).prune_layer  # the server's K: its default policy's
        self.scheduler = engine.scheduler(max_batch=max_batch, prune_layer=prune_layer,
                                          max_queue=max_queue, batching=batching)
        self.loop = ServingLoop(self.scheduler)
        self.metrics = Metrics()

    def policy(self, spec: str):
        """A fresh policy object for ``spec`` (a copy: policies may keep per-request state)."""
        if spec not in self._policies:
            try:
                self._policies[spec] = parse_policy(spec)
            except (ValueError, OSError) as error:
                raise ApiError(400, str(error), "dyrate_policy") from None
        return copy.deepcopy(self._policies[spec])

    async def submit(self, chat: ChatRequest, on_token):
        """Encode and queue ``chat``; returns ``(handle, policy name)``."""
        if not chat.images:
            raise ApiError(400, "this model needs at least one image per request (an image_url "
                                "part)", "messages")
        policy = self.policy(chat.policy or self.default_policy)
        model = self.engine.model
        try:
            ids, vision = await asyncio.to_thread(model.encode_chat, chat.conversation,
                                                  chat.images)
            handle = self.loop.submit(Request(ids, vision, policy, chat.params), on_token)
        except QueueFull as error:
            raise ApiError(429, str(error), None, "rate_limit_exceeded") from None
        except ValueError as error:
            raise ApiError(400, str(error)) from None
        return handle, policy.name


def build_app(server: ChatServer) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app):
        server.loop.start()
        yield
        server.loop.stop()

    app = FastAPI(title="dyrate", lifespan=lifespan)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": server.model_name, "object": "model",
                                            "created": 0, "owned_by": "dyrate"}]}

    @app.get("/metrics")
    async def metrics():
        s = server.scheduler
        return PlainTextResponse(server.metrics.text(len(s.waiting), s.running, s.max_batch))

    @app.post("/v1/chat/completions")
    async def chat_completions(raw: HttpRequest):
        try:
            try:
                body = json.loads(await raw.body())
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise ApiError(400, "the request body is not valid JSON") from None
            chat = parse_chat(body, server.rules, server.default_max_tokens)
            answer = Answer(server, chat)
            await answer.start()
        except ApiError as error:
            server.metrics.reject()
            return JSONResponse(error.body(), status_code=error.status)
        if chat.stream:
            return StreamingResponse(answer.chunks(), media_type="text/event-stream")
        return JSONResponse(await answer.whole())

    return app


class Answer:
    """One request's tokens as they come: the whole answer, or SSE chunks."""

    def __init__(self, server: ChatServer, chat: ChatRequest):
        self.server, self.chat = server, chat
        self.id, self.created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        self.queue: asyncio.Queue = asyncio.Queue()
        self.text, self.stopped = "", False
        self.times: list[float] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.submitted = time.perf_counter()
        self.handle, self.policy_name = await self.server.submit(
            self.chat, lambda handle, token: loop.call_soon_threadsafe(self.queue.put_nowait,
                                                                       token))

    async def deltas(self):
        """The new text after each token, until the request ends or a stop string appears."""
        tokenizer = self.server.engine.model.tokenizer
        try:
            while (token := await self.queue.get()) is not None:
                self.times.append(time.perf_counter())
                if self.stopped:
                    continue
                text = tokenizer.decode(self.handle.sequence.token_ids, skip_special_tokens=True)
                cut = min((text.find(s) for s in self.chat.stop if s in text), default=-1)
                if cut >= 0:
                    text, self.stopped = text[:cut], True
                    self.handle.cancel()
                delta, self.text = text[len(self.text):], text
                if delta:
                    yield delta
        finally:
            self.handle.cancel()  # a client that went away frees its slot at the next step
        self._count()

    def _count(self) -> None:
        ttft = self.times[0] - self.submitted if self.times else None
        tpot = (self.times[-1] - self.times[0]) / (len(self.times) - 1) \
            if len(self.times) > 1 else None
        self.server.metrics.finished(self.handle.status, self.handle.result(), ttft, tpot)

    def _finish_reason(self) -> str:
        return "stop" if self.stopped else self.handle.result().finish_reason

    def _extras(self) -> dict:
        result = self.handle.result()
        stats, n = result.stats, len(result.token_ids)
        usage = {"prompt_tokens": stats.prompt_tokens, "completion_tokens": n,
                 "total_tokens": stats.prompt_tokens + n}
        kept = stats.kept_visual[-1] if stats.kept_visual else stats.n_visual
        return {"usage": usage, "dyrate": {"policy": self.policy_name,
                                           "visual_tokens": stats.n_visual,
                                           "kept_visual_tokens": kept,
                                           "flops_saved": stats.flops_saved}}

    async def whole(self) -> dict:
        async for _ in self.deltas():
            pass
        return {"id": self.id, "object": "chat.completion", "created": self.created,
                "model": self.server.model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": self.text},
                             "finish_reason": self._finish_reason()}], **self._extras()}

    def _chunk(self, delta: dict, finish_reason=None, **extra) -> str:
        chunk = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                 "model": self.server.model_name,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
                 **extra}
        return f"data: {json.dumps(chunk)}\n\n"

    async def chunks(self):
        yield self._chunk({"role": "assistant", "content": ""})
        async for delta in self.deltas():
            yield self._chunk({"content": delta})
        yield self._chunk({}, self._finish_reason(), **self._extras())
        yield "data: [DONE]\n\n"
