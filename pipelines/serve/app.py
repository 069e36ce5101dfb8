"""The Serve application: an ingress deployment (`ChatServer`, FastAPI: HTTP, the OpenAI wire format, the chat
template, the context rule, detokenizing, SSE) bound to a model deployment (`ModelServer`: the decoder and its
continuous-batching `Engine`), which streams tokens back through a Serve handle. Two tiers so that the model
replicas scale (and take GPUs) on their own, and so that a model replica that dies mid-reply ends its streams with
an error event from the ingress instead of a cut connection.

    build({"checkpoint": "runs/align/demo"})  # what `serve run pipelines.serve.app:build checkpoint=...` and
                                              # KubeRay's serveConfigV2 (import_path + args) call
    application(cfg)                          # the same from a composed conf/serve.yaml (pipelines.serve)

Arguments of `build` are conf/serve.yaml keys (`serve.engine.max_batch=32`, dotted or nested), composed over the
file's defaults with Hydra, so a RayService and the command line configure the app the same way.

Routes: GET / (the chat page) and /static/*, GET /healthz (no model work), GET /stats (a model replica's engine
figures), GET /v1/models, POST /v1/chat/completions and
/v1/completions (stream or not). Every error is an OpenAI error object with its status; no request can make a
replica crash or hang: every failure is caught at the route, and a failed decode step fails only its requests.
"""

import asyncio
import hmac
import logging
import os
import time
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from omegaconf import DictConfig, OmegaConf
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipelines.serve import protocol
from pipelines.serve.context import ContextExceeded, fit_reply, with_system_prompt
from pipelines.serve.engine import EngineError, EngineOverloaded, SamplingParams
from pipelines.serve.protocol import APIError

log = logging.getLogger("lmlife.serve")
STATIC = Path(__file__).resolve().parent / "static"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")

api = FastAPI(title="lmlife chat", docs_url=None, redoc_url=None, openapi_url=None)


@api.exception_handler(APIError)
async def _api_error(request: Request, error: APIError):
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, error: StarletteHTTPException):
    kind = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code)
    message = f"{request.method} {request.url.path}: {error.detail}"
    if error.status_code == 404:
        message += " (routes: /, /healthz, /v1/models, /v1/chat/completions, /v1/completions)"
    return JSONResponse(protocol.error_body(message, type="invalid_request_error", code=kind),
                        status_code=error.status_code)


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, error: RequestValidationError):
    return JSONResponse(protocol.error_body(f"invalid request: {error.errors()}", type="invalid_request_error"),
                        status_code=400)


@api.exception_handler(Exception)
async def _server_error(request: Request, error: Exception):
    """A bug or a failure inside the server: logged with the request id; the client gets the id, never the text."""
    request_id = request_id_of(request)
    log.error("request %s: unexpected error on %s", request_id, request.url.path, exc_info=error)
    error = protocol.internal(request_id)
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def request_id_of(request: Request) -> str:
    """Serve's id of this request: its proxy puts it in the `x-request-id` header (a client may send its own),
    answers with it in the `X-Request-ID` header and prints it on the replica's log lines."""
    return request.headers.get("x-request-id", "")[:128] or protocol.new_id("req")


# What `pipelines.checkpoints.check/load` are asked for: serving needs a decoder.
SERVABLE = {"kinds": ("decoder",), "purpose": "serving"}


def default_model_name(checkpoint: str) -> str:
    parts = [p for p in str(checkpoint).rstrip("/").split("/") if p]
    if parts and parts[-1] == "final" and len(parts) > 1:
        parts = parts[:-1]
    return "lmlife-" + (parts[-1] if parts else "model")


@serve.deployment
class ModelServer:
    """A model replica: the decoder and its continuous-batching engine (`settings`: conf/serve.yaml's `serve`).
    `generate` streams batches of (token, finish_reason, error) to the ingress as the engine produces them."""

    def __init__(self, checkpoint: str, settings: dict):
        import torch

        from pipelines import checkpoints
        from pipelines.serve.engine import Engine

        engine_cfg = settings["engine"]
        if engine_cfg.get("threads"):
            torch.set_num_threads(int(engine_cfg["threads"]))
        model = checkpoints.load(checkpoint, **SERVABLE).model
        if settings.get("num_gpus") and torch.cuda.is_available():
            model = model.to("cuda")
        self.engine = Engine(model, max_batch=int(engine_cfg["max_batch"]), batching=bool(engine_cfg["batching"]),
                             max_waiting=int(engine_cfg["max_waiting"]))
        self.interval = float(engine_cfg["stream_interval_s"])

    async def generate(self, prompt: list[int], params: dict):
        """Stream (token, finish_reason, error) batches: the first token at once, then at most one batch per
        `serve.engine.stream_interval_s` (each item through a Serve stream costs the replica far more CPU than a
        decode step gives per request; the reply is no slower, its pieces are bigger)."""
        request = self.engine.submit(prompt, SamplingParams(**params))  # EngineOverloaded / ValueError go back
        loop = asyncio.get_running_loop()
        try:
            yield []  # accepted: the ingress learns it before it sends a status line
            pending, last = [], None
            async for events in request.events():
                pending += [(e.token, e.finish_reason, e.error) for e in events]
                final = pending[-1][1] is not None or pending[-1][2] is not None
                if final or last is None or loop.time() - last >= self.interval:
                    yield pending
                    pending, last = [], loop.time()
        finally:
            request.cancel()  # finished, or cancelled by the ingress (its client left): the slot is freed

    def stats(self) -> dict:
        return {"backend": "native", **self.engine.stats()}

    def __del__(self):
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.close()


@serve.deployment
@serve.ingress(api)
class ChatServer:
    """The ingress: HTTP, the OpenAI wire format, the chat template, the context rule, detokenizing and SSE. Holds
    the tokenizer only; generation goes to the `ModelServer` replicas through a streaming handle, so a model replica
    that dies mid-reply ends its streams with an error event instead of a cut connection, and a request that finds a
    dead replica before it started is sent again once."""

    def __init__(self, model, checkpoint: str, settings: dict):
        from pipelines import checkpoints

        self.model = model
        path, spec = checkpoints.check(checkpoint, **SERVABLE)  # the driver checked it too (a replica may be elsewhere)
        self.tok = checkpoints.read_tokenizer(path)
        gen = settings["generation"]
        self.name = settings.get("model_name") or default_model_name(checkpoint)
        self.context = int(spec["config"]["max_seq_len"])
        if settings["backend"] == "vllm" and settings["vllm"]["max_model_len"]:  # vLLM's engine holds no more
            self.context = min(self.context, int(settings["vllm"]["max_model_len"]))
        self.cap = min(gen.get("max_tokens_cap") or self.context - 1, self.context - 1)
        self.defaults = {"temperature": float(gen["temperature"]), "top_p": float(gen["top_p"])}
        self.default_max_tokens = int(gen["max_tokens"])
        self.min_reply = int(gen["min_reply_tokens"])
        self.system_prompt = gen["system_prompt"] or None
        self.limits = dict(settings["limits"])
        self.created = int(time.time())
        key_env = settings.get("api_key_env")
        self.api_key = os.environ.get(key_env) if key_env else None
        if key_env and not self.api_key:
            raise ValueError(f"serve.api_key_env={key_env} but that environment variable is not set in the replica")

    # ---- pages and metadata ----

    @api.get("/")
    async def page(self):
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @api.get("/static/{name}")
    async def static(self, name: str):
        file = STATIC / name
        if "/" in name or name.startswith(".") or not file.is_file():
            raise APIError(404, f"no static file {name!r}", code="not_found")
        return FileResponse(file)

    @api.get("/healthz")
    async def healthz(self):
        """No model work: what Serve's own overhead is measured on."""
        return {"status": "ok", "model": self.name, "context": self.context, "max_tokens_cap": self.cap,
                "generation": self.generation_defaults()}

    def generation_defaults(self) -> dict:
        """What a request that leaves these out gets (conf/generation/): the chat page starts from them."""
        return {**self.defaults, "max_tokens": self.default_max_tokens, "system_prompt": self.system_prompt}

    @api.get("/stats")
    async def stats(self):
        """One model replica's engine figures: active and waiting requests, slots, steps, tokens, cancelled."""
        return await self.model.stats.remote()

    @api.get("/v1/models")
    async def models(self, request: Request):
        self._authorize(request)
        return {"object": "list", "data": [{"id": self.name, "object": "model", "created": self.created,
                                            "owned_by": "lmlife"}]}

    # ---- generation ----

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request):
        self._authorize(request)
        body = protocol.parse_json(await self._body(request))
        model = protocol.model_name(body, self.name)
        messages = with_system_prompt(protocol.messages(body, max_messages=self.limits["max_messages"]),
                                      self.system_prompt)
        sampling = protocol.sampling(body, defaults=self.defaults, cap=self.cap,
                                     max_stop_chars=self.limits["max_stop_chars"])
        prompt, dropped, budget = await asyncio.to_thread(self._fit_chat, messages, sampling.max_tokens)
        reply = protocol.Reply(protocol.new_id("chatcmpl"), model, chat=True)
        return await self._respond(request, reply, prompt, sampling, budget, stop_ids=self.tok.stop_ids,
                                   headers={"X-Context-Dropped-Messages": str(dropped)})

    @api.post("/v1/completions")
    async def completions(self, request: Request):
        self._authorize(request)
        body = protocol.parse_json(await self._body(request))
        model = protocol.model_name(body, self.name)
        prompt = await asyncio.to_thread(self.tok.encode, protocol.prompt_text(body), bos=True)  # off the event loop
        sampling = protocol.sampling(body, defaults=self.defaults, cap=self.cap,
                                     max_stop_chars=self.limits["max_stop_chars"])
        want = sampling.max_tokens or self.min_reply
        if len(prompt) + want > self.context:
            raise protocol.bad(f"This model's context is {self.context} tokens (prompt and reply together): the "
                               f"prompt takes {len(prompt)} tokens and the reply needs at least {want}",
                               param="prompt", code="context_length_exceeded")
        budget = sampling.max_tokens or min(self.default_max_tokens, self.context - len(prompt))
        reply = protocol.Reply(protocol.new_id("cmpl"), model, chat=False)
        return await self._respond(request, reply, prompt, sampling, budget, stop_ids=self.tok.stop_ids)

    def _authorize(self, request: Request) -> None:
        if self.api_key is None:
            return
        given = request.headers.get("authorization", "")
        token = given[7:] if given[:7].lower() == "bearer " else ""
        if not hmac.compare_digest(token.encode(), self.api_key.encode()):
            raise APIError(401, "Incorrect or missing API key: send 'Authorization: Bearer <key>'",
                           type="authentication_error", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    async def _body(self, request: Request) -> bytes:
        """The request body, refused with a 400 once it exceeds `serve.limits.max_request_bytes` (before it is
        read whole when the client declares its length)."""
        limit = self.limits["max_request_bytes"]
        too_large = protocol.bad(f"the request body exceeds this server's limit of {limit} bytes",
                                 code="request_too_large")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)

    def _fit_chat(self, messages: list[dict], max_tokens: int | None) -> tuple[list[int], int, int]:
        """The context rule (pipelines/serve/context.py) with this server's settings; run off the event loop.
        -> (prompt ids, messages left out, reply budget)."""
        try:
            fitted, budget = fit_reply(self.tok, messages, context=self.context, max_tokens=max_tokens,
                                       default_max_tokens=self.default_max_tokens, min_reply_tokens=self.min_reply)
        except ContextExceeded as e:
            raise protocol.bad(f"{e}; shorten the message" + (" or lower max_tokens" if max_tokens else ""),
                               param="messages", code="context_length_exceeded") from None
        return fitted.ids, fitted.dropped, budget

    async def _start(self, request_id: str, prompt: list[int], params: dict):
        """Send the request to a model replica; -> its stream, once the replica has accepted it. A replica that is
        gone (killed, restarting) gets the request again on another try. What a replica raises is logged, never
        sent: its text is a Ray traceback (process ids, addresses, paths)."""
        from ray.exceptions import RayActorError

        for attempt in (1, 2):
            stream = self.model.options(stream=True).generate.remote(prompt, params)
            try:
                await stream.__anext__()
                return stream
            except EngineOverloaded:
                raise APIError(429, "The server is overloaded; retry after a second", type="rate_limit_error",
                               code="overloaded", headers={"Retry-After": "1"}) from None
            except (RayActorError, EngineError) as e:
                log.warning("request %s: a model replica failed before the request started (try %d): %s",
                            request_id, attempt, e)
                if attempt == 2:
                    raise APIError(503, f"No model replica could take the request (request id {request_id}); retry",
                                   type="server_error", code="unavailable",
                                   headers={"Retry-After": "1"}) from None
            except Exception:  # noqa: BLE001 - the replica refused what the ingress let through: a bug of ours
                log.exception("request %s: the model replica refused it", request_id)
                raise protocol.internal(request_id) from None

    async def _respond(self, request: Request, reply: protocol.Reply, prompt: list[int], sampling: protocol.Sampling,
                       budget: int, *, stop_ids: tuple[int, ...], headers: dict | None = None):
        from pipelines.serve.stream import TextStream

        params = {"max_new_tokens": budget, "temperature": sampling.temperature, "top_p": sampling.top_p,
                  "seed": sampling.seed, "stop_ids": stop_ids}
        request_id = request_id_of(request)
        stream = await self._start(request_id, prompt, params)
        text = TextStream(self.tok.decode, stop=sampling.stop, skip_ids=stop_ids)

        async def pieces():
            """(new text, finish_reason or None) as tokens come; raises APIError on a failure."""
            try:
                async for events in stream:
                    if not events:
                        continue
                    new = text.push([token for token, _, _ in events if token is not None])
                    _, finish, error = events[-1]
                    if error is not None:
                        log.error("request %s: the model replica failed it: %s", request_id, error)
                        raise protocol.internal(request_id)
                    if text.stopped:
                        yield new, "stop"
                        return
                    if finish is not None:
                        yield new + text.finish(), finish
                        return
                    yield new, None
            except APIError:
                raise
            except Exception:  # noqa: BLE001 - the model replica died or failed mid-reply
                log.exception("request %s: the model replica serving it failed mid-reply", request_id)
                raise APIError(503, f"The model replica serving this reply failed (request id {request_id}); retry",
                               type="server_error", code="unavailable",
                               headers={"Retry-After": "1"}) from None

        if not sampling.stream:
            try:
                parts, finish = [], "length"
                async for new, finish in pieces():
                    parts.append(new)
            finally:
                stream.cancel()  # done, or the client left (cancelled): the model replica frees the slot
            used = protocol.usage(len(prompt), text.completion_tokens)
            return JSONResponse(reply.whole("".join(parts), finish, used), headers=headers)

        async def events():
            try:
                if reply.chat:
                    yield protocol.sse(reply.chunk(role=True))
                async for new, finish in pieces():
                    if new:
                        yield protocol.sse(reply.chunk(text=new))
                    if finish is not None:
                        yield protocol.sse(reply.chunk(finish_reason=finish))
                if sampling.include_usage:
                    yield protocol.sse(reply.chunk(used=protocol.usage(len(prompt), text.completion_tokens)))
            except APIError as e:  # the status line is sent: the error travels as an event
                yield protocol.sse(e.body())
            finally:
                stream.cancel()
            yield protocol.sse("[DONE]")

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", **(headers or {})})


# ---- building the application ----

def settings_of(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg.serve, resolve=True)


BACKENDS = ("native", "vllm")


def check_backend(settings: dict, spec: dict) -> None:
    """Before Ray starts: `serve.backend` is known and, for vllm, vLLM is installed and can run the checkpoint whose
    config.json is `spec` (one line otherwise)."""
    if backend_of(settings) == "vllm":
        from pipelines.serve.vllm_engine import require_vllm

        require_vllm(spec)


def backend_of(settings: dict) -> str:
    """`serve.backend`, refused in one line unless it is one of BACKENDS."""
    from pipelines.errors import ConfigError

    if settings["backend"] not in BACKENDS:
        raise ConfigError(f"serve.backend={settings['backend']} is not one of {', '.join(BACKENDS)}")
    return settings["backend"]


def model_deployment(backend: str):
    """The model replicas' deployment: ours, or vLLM's engine behind the same `generate` stream (imported only
    here, so that the default backend never imports vllm)."""
    if backend == "vllm":
        from pipelines.serve.vllm_engine import VLLMModelServer

        return VLLMModelServer
    return ModelServer


def application(cfg: DictConfig):
    """The bound Serve application for a composed conf/serve.yaml: the ingress bound to the model deployment."""
    from pipelines.errors import ConfigError

    settings = settings_of(cfg)
    backend = backend_of(settings)
    checkpoint = str(cfg.checkpoint)
    model_options = {
        "max_ongoing_requests": settings["max_ongoing_requests"],
        "max_queued_requests": settings["max_queued_requests"],
        "ray_actor_options": {"num_cpus": settings["num_cpus"], "num_gpus": settings["num_gpus"]},
    }
    if settings["autoscaling_config"]:
        model_options["autoscaling_config"] = settings["autoscaling_config"]
    else:
        model_options["num_replicas"] = settings["num_replicas"]
    ingress = settings["ingress"]
    ingress_options = {"num_replicas": ingress["num_replicas"], "max_ongoing_requests": ingress["max_ongoing_requests"],
                       "ray_actor_options": {"num_cpus": ingress["num_cpus"]}}
    key_env = settings["api_key_env"]
    if key_env:
        if not os.environ.get(key_env):
            raise ConfigError(f"serve.api_key_env={key_env} names an environment variable that is not set here")
        # The key reaches the ingress through its runtime environment, not as an argument in the app's config.
        ingress_options["ray_actor_options"]["runtime_env"] = {"env_vars": {key_env: os.environ[key_env]}}
    elif settings["host"] not in LOCAL_HOSTS:
        log.warning("serving on %s without an API key: anyone who can reach the port can use the model "
                    "(set serve.api_key_env)", settings["host"])
    model = model_deployment(backend).options(**model_options).bind(checkpoint, settings)
    return ChatServer.options(**ingress_options).bind(model, checkpoint, settings)


def build(args: dict):
    """App builder for `serve run pipelines.serve.app:build checkpoint=... serve.x=...` and serveConfigV2 args. The
    checkpoint is checked here, once: a wrong one fails the build with its cause, not every replica, retried."""
    from pipelines import checkpoints

    refuse_proxy_settings(args)
    cfg = config_from_args(args)
    _, spec = checkpoints.check(None if OmegaConf.is_missing(cfg, "checkpoint") else cfg.checkpoint, **SERVABLE)
    check_backend(settings_of(cfg), spec)
    return application(cfg)


# Settings `pipelines.serve` applies itself (it starts Serve's proxy and names the app) that a builder cannot: under
# `serve run` / `serve deploy` / a RayService, Serve does that, configured as said here.
NOT_FOR_BUILDER = {
    "serve.host": "start Serve's proxy with `serve start --http-host H` before `serve run`, or give "
                  "`http_options: {host: H}` in the `serve deploy` config",
    "serve.port": "start Serve's proxy with `serve start --http-port P` before `serve run`, or give "
                  "`http_options: {port: P}` in the `serve deploy` config",
    "serve.app_name": "use `serve run --name N`, or the application's `name` in the `serve deploy` config",
    "serve.route_prefix": "use `serve run --route-prefix R`, or the application's `route_prefix` in the "
                          "`serve deploy` config",
}


def refuse_proxy_settings(args: dict) -> None:
    """A builder argument that would be silently ignored (the proxy and the app's name are Serve's) is an error
    that says what to do instead."""
    from pipelines.errors import ConfigError

    flat = _flatten(OmegaConf.to_container(OmegaConf.create(dict(args)), resolve=True))
    for key in flat:
        if key.lstrip("+") in NOT_FOR_BUILDER:
            raise ConfigError(f"{key.lstrip('+')} has no effect in the app builder (Serve runs the proxy and names "
                              f"the app): {NOT_FOR_BUILDER[key.lstrip('+')]}")


def config_from_args(args: dict) -> DictConfig:
    """conf/serve.yaml composed with builder `args` — its keys, dotted or nested: strings (the command line's) are
    parsed as Hydra overrides, typed values (a YAML serveConfigV2's) are set as they are; unknown keys are errors."""
    from hydra import compose, initialize_config_dir

    from pipelines.entry import CONF_DIR
    from pipelines.errors import ConfigError

    flat = _flatten(OmegaConf.to_container(OmegaConf.create(dict(args)), resolve=True))
    overrides = [f"{key}={value}" for key, value in flat.items() if isinstance(value, str)]
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = compose(config_name="serve", overrides=overrides)
    for key, value in flat.items():
        if not isinstance(value, str):
            if OmegaConf.select(cfg, key, default="<missing>") == "<missing>":
                raise ConfigError(f"unknown serve setting {key!r} (see conf/serve.yaml)")
            OmegaConf.update(cfg, key, value, merge=False)
    return cfg


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value and key.rsplit(".", 1)[-1] != "autoscaling_config":
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def deploy(cfg: DictConfig) -> str:
    """Start Serve's HTTP proxy where conf says (on the connected cluster) and run the app; -> its base URL."""
    from ray.serve.config import HTTPOptions

    settings = settings_of(cfg)
    serve.start(http_options=HTTPOptions(host=settings["host"], port=settings["port"]))
    serve.run(application(cfg), name=settings["app_name"], route_prefix=settings["route_prefix"])
    host = "127.0.0.1" if settings["host"] in ("0.0.0.0", "::") else settings["host"]
    return f"http://{host}:{settings['port']}{settings['route_prefix'].rstrip('/')}"


def undeploy(cfg: DictConfig) -> None:
    """Delete the app (its replicas free their CPUs/GPUs); Serve's controller and proxy stay for the next one."""
    serve.delete(cfg.serve.app_name, _blocking=True)
