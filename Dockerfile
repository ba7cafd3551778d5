# zoo serve on CPU: an OpenAI-compatible API for a zoo checkpoint or a Hugging Face directory.
#   docker build -t zoo-serve .
#   docker run -p 8000:8000 -v $PWD/runs/gpt-nano/.../last.ckpt:/models/model.ckpt:ro \
#              -e ZOO_MODEL=/models/model.ckpt -e ZOO_API_KEY=change-me zoo-serve
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /app

# torch first, from the CPU wheel index (no CUDA libraries: a much smaller image)
RUN pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu

COPY pyproject.toml README.md ./
COPY zoo ./zoo
COPY kernels ./kernels
RUN pip install ".[serve]"

RUN useradd --create-home zoo && mkdir -p /data && chown zoo /data
USER zoo
VOLUME /data
EXPOSE 8000
ENV ZOO_MODEL=/models/model.ckpt

HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health')"
# 0.0.0.0 inside the container: the port is exposed only where `docker run -p` (or a Service) says
CMD ["sh", "-c", "exec zoo serve --model \"$ZOO_MODEL\" --host 0.0.0.0 --port 8000 --log_file /data/requests.jsonl --feedback_file /data/feedback.jsonl"]
