"""Monitoring and the feedback loop: a JSON-lines request log, Prometheus metrics, and the feedback
file.

Request log: one JSON object a line — `id`, `time` (UNIX seconds), `endpoint`, `status`,
`latency_s`, `prompt_tokens`, `completion_tokens`, `error` (null or the message); with
`--log_content` also `prompt` and `completion`.

Feedback file (`POST /v1/feedback {"id", "rating", "correction"}`): one JSON object a line,
`{"prompt": str, "response": str, "id": str, "rating": int | null, "time": float}` — `response` is
the correction when one was given, else the served completion. The `prompt`/`response` pair is the
record an instruction-tuning data module reads as one more source.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Optional


class Metrics:
    """Prometheus metrics in a registry of their own (one per app)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("zoo_requests_total", "Requests by endpoint and status", ["endpoint", "status"],
                                registry=self.registry)
        self.latency = Histogram("zoo_request_latency_seconds", "Request latency", ["endpoint"], registry=self.registry,
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.tokens = Counter("zoo_generated_tokens_total", "Completion tokens generated", registry=self.registry)
        self.prompt_tokens = Counter("zoo_prompt_tokens_total", "Prompt tokens read", registry=self.registry)
        self.batch_size = Histogram("zoo_batch_size", "Requests decoded together", registry=self.registry,
                                    buckets=(1, 2, 4, 8, 16, 32, 64))
        self.queue = Gauge("zoo_queue_length", "Generation requests waiting for a batch", registry=self.registry)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class RequestLog:
    def __init__(self, path: Optional[str], content: bool):
        self.path, self.content, self.lock = (Path(path) if path else None), content, threading.Lock()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        if not self.content:
            record = {k: v for k, v in record.items() if k not in ("prompt", "completion")}
        if self.path is not None:
            with self.lock, self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")


class Feedback:
    """Recent completions by id (prompt and text), and the JSONL file that corrections are appended to."""

    def __init__(self, path: str, keep: int = 10_000):
        self.path, self.keep, self.lock = Path(path), keep, threading.Lock()
        self.recent: OrderedDict[str, tuple[str, str]] = OrderedDict()

    def remember(self, request_id: str, prompt: str, completion: str) -> None:
        with self.lock:
            self.recent[request_id] = (prompt, completion)
            while len(self.recent) > self.keep:
                self.recent.popitem(last=False)

    def add(self, request_id: str, rating: Optional[int], correction: Optional[str]) -> Optional[dict]:
        with self.lock:
            served = self.recent.get(request_id)
            if served is None:
                return None
            record = {"prompt": served[0], "response": correction if correction is not None else served[1],
                      "id": request_id, "rating": rating, "time": time.time()}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
            return record
