# One image per NeMo-family variant (Parakeet, FastConformer), for operators who build with Docker
# instead of Nix. Build arguments come from compose.yaml / docs/DEPLOY.md (both generated from engines/):
#
#   docker build -f deploy/docker/nemo.Dockerfile \
#     --build-arg FAMILY_DIR=engines/transcribe/parakeet --build-arg VARIANT=parakeet-0.6b \
#     -t dalston-parakeet-0.6b:1.0.0 .
#
# FAMILY_DIR: the family directory (engine.py + variants/*.yaml); VARIANT: the engine id to serve.
# The weights are fetched at build time by `dalston models pull`, which reads the variant's pinned
# file list (repo, revision, size, sha256) from its YAML and fails the build on any mismatch.
FROM python:3.11-slim

ARG FAMILY_DIR
ARG VARIANT
ARG EXTRAS=server,nemo
# CPU torch by default; pass --build-arg TORCH=cuda on a GPU build host.
ARG TORCH=cpu

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    DALSTON_ENGINES_DIR=/app/engines \
    DALSTON_MODEL_DIR=/models

WORKDIR /app
RUN test -n "$FAMILY_DIR" && test -n "$VARIANT" || { echo "set --build-arg FAMILY_DIR=... --build-arg VARIANT=<engine id>" >&2; exit 1; }

# Exact versions from poetry.lock (scripts/install.py installs them with pip --no-deps, then dalston).
COPY pyproject.toml poetry.lock README.md /app/
COPY scripts/install.py /app/scripts/install.py
COPY dalston /app/dalston
RUN python scripts/install.py --extras "$EXTRAS" --torch "$TORCH"

# Only this variant's family: its engine.py and its variant files.
COPY ${FAMILY_DIR} /app/${FAMILY_DIR}

# Pinned weights, sha256-verified (a mismatch fails the build). Engines without weights skip this.
RUN python -c "import sys; from dalston.catalog import Catalog; sys.exit(0 if Catalog.load().get(sys.argv[1]).spec.weights else 3)" "$VARIANT"; \
    rc=$?; if [ "$rc" = 0 ]; then dalston models pull "$VARIANT"; elif [ "$rc" != 3 ]; then exit "$rc"; fi

ENV ENGINE_ID=${VARIANT}
# The job storage mount point (docs/JOBS.md), owned by the runtime user: a fresh volume mounted there takes its owner.
RUN useradd --system --uid 10001 dalston && install -d -o dalston /var/lib/dalston/jobs
USER dalston
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/ready', timeout=3)"
CMD ["sh", "-c", "exec dalston serve \"$ENGINE_ID\" --host 0.0.0.0 --port 8000"]
