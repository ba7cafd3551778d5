"""Serving: any zoo model over an OpenAI-compatible HTTP API (FastAPI + uvicorn), with dynamic
batching through `zoo.generation`, a JSON-lines request log, Prometheus metrics and a feedback file.

    zoo serve --model runs/.../last.ckpt [--host 127.0.0.1] [--port 8000] [--api_key KEY] [--quantize int8-weight]

- `engine`: the dynamic batcher (one worker thread; a short wait window; per-request stopping).
- `model`: the served model and its heads (features, classifier, CLIP scoring), chat template.
- `app`: the routes and OpenAI-shaped errors. `monitor`: request log, metrics, feedback file.
"""

from __future__ import annotations

import os
from typing import Optional

from zoo.errors import ZooError


def _require_serving_libraries() -> None:
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as err:
        raise ZooError(f"zoo serve needs {err.name}: pip install 'zoo[serve]'") from None


def create_app(model: str, *, model_name: Optional[str] = None, device: str = "cpu", api_key: Optional[str] = None,
               max_batch_size: int = 16, wait_ms: float = 5.0, log_file: Optional[str] = None,
               log_content: bool = False, feedback_file: str = "feedback.jsonl", max_body_bytes: int = 1 << 20,
               quantize: Optional[str] = None):
    """The FastAPI app serving `model` (a path as `zoo serve --model` takes), quantized with `quantize`
    (a `zoo.compress.quantize` scheme) when given: a bad scheme or device fails before anything loads."""
    if quantize is not None:
        from zoo.compress.quantize import check_quantize_option

        check_quantize_option(quantize, device, [model])
    _require_serving_libraries()
    from zoo.serve.app import Server, build_app
    from zoo.serve.model import ServedModel

    served = ServedModel(model, model_name, device, quantize)
    return build_app(Server(served, api_key=api_key, max_batch_size=max_batch_size, wait_ms=wait_ms,
                            log_path=log_file, log_content=log_content, feedback_path=feedback_file,
                            max_body_bytes=max_body_bytes))


def serve(
    model: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    model_name: Optional[str] = None,
    api_key: Optional[str] = None,
    max_batch_size: int = 16,
    wait_ms: float = 5.0,
    log_file: Optional[str] = "requests.jsonl",
    log_content: bool = False,
    feedback_file: str = "feedback.jsonl",
    max_body_bytes: int = 1 << 20,
    device: str = "cpu",
    quantize: Optional[str] = None,
) -> None:
    """Serve a model over an OpenAI-compatible API: /v1/completions, /v1/chat/completions, /v1/models,
    /v1/embeddings, /v1/classifications, /v1/image_scores, /v1/feedback, /health, /metrics.

    Args:
        model: a `.ckpt` file written by `zoo fit`, or a Hugging Face checkpoint directory.
        host: address to bind; 127.0.0.1 (this machine only) unless you mean to expose it.
        port: TCP port.
        model_name: the name clients pass as `model` (default: the file or folder name).
        api_key: require `Authorization: Bearer <key>` (default: the ZOO_API_KEY environment variable; none).
        max_batch_size: most requests decoded together; 1 turns batching off.
        wait_ms: how long a request waits for others to join its batch.
        log_file: JSON-lines request log (null: none).
        log_content: also log prompt and completion texts.
        feedback_file: where POST /v1/feedback appends {"prompt", "response"} records.
        max_body_bytes: larger request bodies get 413.
        device: "cpu", "cuda", ...
        quantize: quantize the model with torchao before serving: "int8-weight", "int8-dynamic"
            (CPU or CUDA), "int4-weight", "float8" (CUDA); see `zoo quantize`. /health reports it.
    """
    app = create_app(model, model_name=model_name, device=device, api_key=api_key or os.environ.get("ZOO_API_KEY"),
                     max_batch_size=max_batch_size, wait_ms=wait_ms, log_file=log_file, log_content=log_content,
                     feedback_file=feedback_file, max_body_bytes=max_body_bytes, quantize=quantize)
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning")
