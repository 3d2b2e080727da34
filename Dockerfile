# chef-genius training image: CUDA runtime with PyTorch, non-root, no secrets inside.
#   docker build -t chef-genius .
#   docker run --gpus all -v $(pwd)/models:/workspace/models -v $(pwd)/logs:/workspace/logs \
#       chef-genius --epochs 5 --batch-size 16 --lora-r 32 --lora-alpha 64
# A W&B key, if any, is passed at run time: -e WANDB_API_KEY (never baked into the image).
# PyTorch 2.8 with CUDA 12.9: runs on RTX 50-series (Blackwell needs CUDA 12.8+) and has FSDP2.
# Needs BuildKit (the default builder since Docker 23; DOCKER_BUILDKIT=1 on Docker 20.10).
#
# The same file builds on any Debian/Ubuntu base with python3 and python3-venv and a PyTorch
# wheel of your choice, e.g. the CPU test image of docker/test_image.sh:
#   docker build --build-arg BASE_IMAGE=chef-genius-base:bookworm -t chef-genius:cpu .
# with torch-*.whl in docker/wheels/ (installed first; without it pip takes torch from the index).
# Behind a TLS-intercepting proxy, hand pip the proxy's CA for the build only (never stored):
#   --secret id=pip-ca,src=/etc/ssl/certs/ca-certificates.crt
ARG BASE_IMAGE=pytorch/pytorch:2.8.0-cuda12.9-cudnn9-runtime
FROM ${BASE_IMAGE}

# (hadolint DL3064 reads "TOKEN" in TOKENIZERS_PARALLELISM as a secret; nothing here is one.)
# hadolint ignore=DL3064
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/workspace/models/.hf-cache TOKENIZERS_PARALLELISM=false \
    PATH=/opt/venv/bin:$PATH

SHELL ["/bin/sh", "-eu", "-c"]
WORKDIR /opt/chef-genius
COPY pyproject.toml ./
# The training stack first, from pyproject.toml alone, so that a change to the code or the README
# rebuilds only the small layer below. A base with PyTorch (the CUDA runtime image) installs into
# its own Python, keeping its torch; a base without one (plain Debian, where pip refuses the
# system Python) gets a venv at /opt/venv, first on PATH. Wheels in docker/wheels/ are installed
# first (mounted, so they never land in a layer); versions are bounded in pyproject.toml and the
# package is this checkout, so DL3013's pinning does not apply. pip keeps no cache.
# hadolint ignore=DL3013
RUN --mount=type=bind,source=docker/wheels,target=/tmp/wheels \
    --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi; \
    if python3 -c "import torch" 2>/dev/null; then pip=pip; \
    else python3 -m venv /opt/venv && pip=/opt/venv/bin/pip; fi; \
    find /tmp/wheels -maxdepth 1 -name '*.whl' -exec "$pip" install {} +; \
    mkdir src && touch README.md && "$pip" install ".[train]" && "$pip" uninstall --yes chef-genius; \
    rm -rf build src README.md ./*.egg-info /root/.cache /tmp/pip-*

COPY README.md ./
COPY src ./src
# (pip is the venv's where there is one: /opt/venv/bin comes first on PATH.)
RUN --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi; \
    pip install --no-deps . && rm -rf build src/*.egg-info /root/.cache /tmp/pip-*

RUN if id -u 1000 >/dev/null 2>&1; then userdel --remove "$(id -nu 1000)" 2>/dev/null || true; fi; \
    useradd --create-home --uid 1000 --user-group chef && mkdir -p /workspace/models /workspace/logs \
    && chown -R chef:chef /workspace
COPY --chmod=755 docker/entrypoint.sh /usr/local/bin/chef-genius-entrypoint
USER 1000:1000
WORKDIR /workspace
VOLUME ["/workspace/models", "/workspace/logs"]
ENTRYPOINT ["chef-genius-entrypoint"]
CMD ["train", "--output-dir", "/workspace/models/run", "--resume", "auto"]
