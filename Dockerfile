# chef-genius training image: CUDA runtime with PyTorch, non-root, no secrets inside.
#   docker build -t chef-genius .
#   docker run --gpus all -v $(pwd)/models:/workspace/models -v $(pwd)/logs:/workspace/logs \
#       chef-genius --epochs 5 --batch-size 16 --lora-r 32 --lora-alpha 64
# A W&B key, if any, is passed at run time: -e WANDB_API_KEY (never baked into the image).
# PyTorch 2.8 with CUDA 12.9: runs on RTX 50-series (Blackwell needs CUDA 12.8+) and has FSDP2.
FROM pytorch/pytorch:2.8.0-cuda12.9-cudnn9-runtime

# (hadolint DL3064 reads "TOKEN" in TOKENIZERS_PARALLELISM as a secret; nothing here is one.)
# hadolint ignore=DL3064
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/workspace/models/.hf-cache TOKENIZERS_PARALLELISM=false

WORKDIR /opt/chef-genius
COPY pyproject.toml README.md ./
COPY src ./src
# torch comes with the base image; install the rest of the training stack (versions bounded in
# pyproject.toml; the package is this checkout, so DL3013's pinning does not apply).
# hadolint ignore=DL3013
RUN pip install ".[train]" && rm -rf /root/.cache

RUN useradd --create-home --uid 1000 chef && mkdir -p /workspace/models /workspace/logs \
    && chown -R chef:chef /workspace
COPY --chmod=755 docker/entrypoint.sh /usr/local/bin/chef-genius-entrypoint
USER 1000:1000
WORKDIR /workspace
VOLUME ["/workspace/models", "/workspace/logs"]
ENTRYPOINT ["chef-genius-entrypoint"]
CMD ["train", "--output-dir", "/workspace/models/run", "--resume", "auto"]
