# seatwarden container image.
#
#   docker build -t seatwarden .
#
# 1. Check the configuration and READ THE PLAN before the daemon's first start:
#    on a fresh volume it reconciles at once, and roles are managed whole (a
#    workspace Owner in the directory whom no [[policy.mapping]] gives Owner is
#    planned down; only the last active Owner is kept), so map your Owners'
#    group to Owner and put the break-glass account in safety.protected. The
#    same volume, files and environment as the daemon, the command last:
#
#   docker run --rm --read-only --tmpfs /tmp --cap-drop ALL \
#     -v seatwarden-state:/var/lib/seatwarden \
#     -v /etc/seatwarden/seatwarden.toml:/etc/seatwarden/seatwarden.toml:ro \
#     -v /srv/seatwarden/directory.json:/srv/seatwarden/directory.json:ro \
#     -v /etc/seatwarden/workspace-token:/run/secrets/workspace-token:ro \
#     -e SEATWARDEN__WORKSPACE__TOKEN_FILE=/run/secrets/workspace-token \
#     seatwarden check-config
#   docker run --rm … seatwarden plan    # the same options; writes nothing to the workspace
#
#    Plan again after every change to the configuration, until the plan shows
#    only what you want done.
#
# 2. Start the daemon:
#
#   docker run -d --name seatwarden --restart unless-stopped \
#     -v seatwarden-state:/var/lib/seatwarden \
#     -v /etc/seatwarden/seatwarden.toml:/etc/seatwarden/seatwarden.toml:ro \
#     -v /srv/seatwarden/directory.json:/srv/seatwarden/directory.json:ro \
#     -v /etc/seatwarden/workspace-token:/run/secrets/workspace-token:ro \
#     -e SEATWARDEN__WORKSPACE__TOKEN_FILE=/run/secrets/workspace-token \
#     -e SEATWARDEN__HTTP__LISTEN=0.0.0.0:9464 \
#     -p 127.0.0.1:9464:9464 \
#     --stop-timeout 45 --read-only --tmpfs /tmp --cap-drop ALL \
#     --security-opt no-new-privileges \
#     seatwarden
#
# - The process runs as uid/gid 10001: mounted secrets and the directory export
#   must be readable by it: for a secret, chown 10001 and chmod 0400 on the host
#   file (a mode others can read, such as 0444, works but is warned about at every
#   start); Compose/Swarm/Kubernetes secrets: set their uid and mode accordingly.
#   The directory export is not secret: 0444 is fine.
#   Directory credentials (directory-token, ldap-password, …), the SMTP password
#   and the trigger token are mounted and pointed at the same way, e.g.
#   -v /etc/seatwarden/directory-token:/run/secrets/directory-token:ro
#   -e SEATWARDEN__DIRECTORY__TOKEN_FILE=/run/secrets/directory-token
#   A private CA (a self-hosted app, a proxy that inspects TLS) is mounted the
#   same way and named by its ca_file key, e.g.
#   -v /etc/seatwarden/proxy-ca.pem:/etc/seatwarden/proxy-ca.pem:ro
#   -e SEATWARDEN__WORKSPACE__CA_FILE=/etc/seatwarden/proxy-ca.pem
# - [state] path must be inside the volume: "/var/lib/seatwarden/state.db"
#   (config/seatwarden.example.toml has it). A fresh named volume takes the
#   image's ownership (10001, 0700); a bind-mounted host directory must be
#   owned by 10001.
# - SIGTERM starts no further write and lets those already sent finish and be
#   journaled (bounded at 30 s; the next run sends the rest): Docker's default
#   10 s grace is too short, hence --stop-timeout 45 (Compose:
#   stop_grace_period: 45s; Kubernetes: terminationGracePeriodSeconds: 45).
# - --read-only is supported: the only writes go to the volume and /tmp
#   (SQLite's temporary files), hence --tmpfs /tmp.
# - Back up the state while it runs into the volume, then copy it out:
#   docker exec seatwarden seatwarden backup /var/lib/seatwarden/backups/
#   (README, "Backing up and restoring the state"; never copy state.db alone
#   while the daemon runs: its -wal holds the latest writes).
# - Other commands against the same database while it runs:
#   docker exec seatwarden seatwarden status

# ---------------------------------------------------------------------------
# Build stage
# ---------------------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /build

# Dependencies first, in their own layer, rebuilt only when Cargo.toml or
# Cargo.lock change. Cargo needs every target the manifest names (library,
# binary, the `it` test, the `core`, `e2e` and `connectors` benches) to exist, so
# stubs stand in for them (tests/it/packaging.rs checks the list against
# Cargo.toml); then the stubs' own artefacts are removed so the real sources
# below are always compiled.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches tests/it \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs tests/it/main.rs \
 && echo 'fn main() {}' > benches/core.rs \
 && echo 'fn main() {}' > benches/e2e.rs \
 && echo 'fn main() {}' > benches/connectors.rs \
 && cargo build --release --locked \
 && rm -rf src benches tests \
      target/release/seatwarden target/release/seatwarden.d \
      target/release/.fingerprint/seatwarden-* \
      target/release/deps/seatwarden-* target/release/deps/libseatwarden-*

# The sources (.dockerignore keeps target/, .git and local databases out).
# src/demo.rs embeds config/demo/*, so config/ is needed too.
COPY . .
RUN cargo build --release --locked \
 && install -m 0755 target/release/seatwarden /usr/local/bin/seatwarden \
 && /usr/local/bin/seatwarden --version

# ---------------------------------------------------------------------------
# Runtime stage: Debian 12 (the builder's glibc), CA certificates for rustls
# (the platform verifier reads /etc/ssl/certs), time-zone data, nothing else.
# ---------------------------------------------------------------------------
FROM debian:bookworm-slim

LABEL org.opencontainers.image.title="seatwarden" \
      org.opencontainers.image.description="Keeps a SCIM 2.0 workspace's accounts, roles and groups in line with the company directory" \
      org.opencontainers.image.licenses="Apache-2.0"

ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tzdata \
 && rm -rf /var/lib/apt/lists/*

# A fixed, non-root uid/gid, so volume and secret ownership can be planned.
RUN groupadd --system --gid 10001 seatwarden \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /var/lib/seatwarden --shell /usr/sbin/nologin seatwarden \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/seatwarden \
 && install -d -m 0755 /etc/seatwarden

COPY --from=builder /usr/local/bin/seatwarden /usr/local/bin/seatwarden

ENV SEATWARDEN_CONFIG=/etc/seatwarden/seatwarden.toml
WORKDIR /var/lib/seatwarden
VOLUME /var/lib/seatwarden
USER 10001:10001

# [http] listen: inside a container it must be "0.0.0.0:9464" (or set
# SEATWARDEN__HTTP__LISTEN=0.0.0.0:9464) to be reachable through a published
# port; the default 127.0.0.1:9464 is reachable only from inside the container.
# /healthz, /readyz, /metrics, /status; publish it to the monitoring network only.
# Off loopback, /status (it names leavers) answers only with the bearer token of
# [http] trigger_token_file.
EXPOSE 9464

# `seatwarden healthcheck` GETs /healthz and exits 0 or 1 (no curl in the
# image). It does not load the configuration: a broken edit of the file, which
# the running daemon refuses on reload, must not mark it unhealthy. The address
# is SEATWARDEN__HTTP__LISTEN (this container's environment, the daemon's too),
# else [http] listen read alone from the file, else 127.0.0.1:9464; with another
# port, the surest is SEATWARDEN__HTTP__LISTEN (or `healthcheck --listen ADDR`
# in a HEALTHCHECK of your own). With listen on 0.0.0.0 (or [::]) it connects
# to 127.0.0.1 (or [::1]), so it works in both setups.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["seatwarden", "healthcheck"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["seatwarden"]
CMD ["--log-format", "json", "daemon"]
