# The gateway image for operators who build with Docker (the Nix output is dalston-gateway:<version>).
# It carries the whole catalog (engines/**.yaml, aliases.yaml): it validates registrations against the
# spec digests and resolves model names and aliases, but loads no model.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 DALSTON_ENGINES_DIR=/app/engines
WORKDIR /app
COPY pyproject.toml poetry.lock README.md /app/
COPY scripts/install.py /app/scripts/install.py
COPY dalston /app/dalston
RUN python scripts/install.py --extras server
COPY engines /app/engines
RUN dalston validate --all >/dev/null
# The job storage mount point (docs/JOBS.md), owned by the runtime user: a fresh volume mounted there takes its owner.
RUN useradd --system --uid 10001 dalston && install -d -o dalston /var/lib/dalston/jobs
USER dalston
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/ready', timeout=3)"
CMD ["dalston", "gateway", "--host", "0.0.0.0", "--port", "8000"]
