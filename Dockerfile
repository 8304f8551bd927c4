# reconciler: the daemon, serving the config repository mounted at /config.
# Build: docker build -t reconciler .
# Run:   docker run --stop-timeout 630 -v /srv/backup-config:/config -v reconciler-state:/state \
#          -p 127.0.0.1:8080:8080 reconciler
# A stop lets running backups finish for `--shutdown-grace` (600 s): Docker's own stop timeout
# (10 s unless --stop-timeout, or stop_grace_period in Compose) must be longer, or it kills the
# daemon mid-backup (the next start recovers, but the backup is lost).
FROM python:3.11-slim

RUN apt-get update \
 && apt-get install -y --no-install-recommends git openssh-client zstd gnupg ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --create-home --uid 10001 --shell /usr/sbin/nologin reconciler \
 && install -d -m 0700 -o reconciler -g reconciler /state \
 && git config --system --add safe.directory /config

WORKDIR /opt/reconciler
COPY pyproject.toml README.md ./
COPY reconciler ./reconciler
RUN pip install --no-cache-dir . && rm -rf /root/.cache

USER reconciler
ENV RECONCILER_REPO=/config \
    RECONCILER_STATE=/state/state.db \
    RECONCILER_HOST=0.0.0.0 \
    RECONCILER_PORT=8080 \
    PYTHONUNBUFFERED=1
VOLUME ["/config", "/state"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"
# tini as PID 1 passes SIGTERM on to the daemon and reaps the exited children of the programs it
# starts (gpg's agent); exec form, so no shell stands between them.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["reconciler", "serve"]
