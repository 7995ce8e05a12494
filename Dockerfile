# The recindex service as a container image, built from this repository (docs/deploy.md):
#
#   docker build -t recindex .
#   docker run -p 8000:8000 -v "$PWD/runs/b5:/bundles/current:ro" -v recindex-state:/data/state \
#       -e RECINDEX_API_KEYS=change-me recindex
#
# The bundle is mounted, not baked in: a new model is a new mount (or a promotion through the admin
# API), not a new image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch first, from PyTorch's CPU wheel index: the default Linux wheel brings the CUDA libraries
# (gigabytes) that a CPU service never loads. Empty TORCH_INDEX to take the pinned wheel from PyPI.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install "torch==2.13.0" ${TORCH_INDEX:+--index-url "$TORCH_INDEX"}

WORKDIR /opt/recindex
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install . && rm -rf /opt/recindex/src

# An unprivileged user; the state folder (write-ahead log, snapshots, writer lock) is a volume.
RUN useradd --create-home --uid 10001 recindex \
    && mkdir -p /data/state /bundles \
    && chown recindex /data/state
USER recindex
VOLUME ["/data/state"]

ENV RECINDEX_BUNDLE=/bundles/current \
    RECINDEX_STATE_DIR=/data/state

EXPOSE 8000
# /readyz answers once the bundle and its index are loaded and the log is replayed
HEALTHCHECK --interval=15s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2)"]

ENTRYPOINT ["recindex", "serve"]
CMD ["--host", "0.0.0.0", "--port", "8000"]
