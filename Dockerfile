# syntax=docker/dockerfile:1
#
# The `vigil` binary in a small Debian image.
#
#     docker build -t vigil .
#     docker run -p 7878:7878 -v vigil-data:/var/lib/vigil vigil
#
# The same image runs every role: `vigil serve` (the default command below), `vigil writer`,
# `vigil reader` and `vigil generate` (see deploy/compose.yaml and docs/distributed.md).

# --- build ------------------------------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
# The registry and target caches survive between builds (BuildKit), so a rebuild after a code
# change compiles vigil's crates only. The target directory is a cache mount, not part of the
# image, so the binary is copied out of it in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p vigil \
    && install -m 0755 target/release/vigil /usr/local/bin/vigil

# --- run --------------------------------------------------------------------------------------
FROM debian:bookworm-slim
# ca-certificates: the system's root certificates, which TLS connections to NATS trust (besides
# any `--nats-tls-ca`).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# A fixed uid, so a bind-mounted data directory can be chowned to it on the host.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/vigil --shell /usr/sbin/nologin vigil \
    && install -d -m 0700 -o vigil -g vigil /var/lib/vigil
COPY --from=build /usr/local/bin/vigil /usr/local/bin/vigil

USER vigil
# Relative paths (a `vigil.toml`, a `.env`) resolve here; or give the file with VIGIL_CONFIG.
WORKDIR /var/lib/vigil
# The embedded store's event log, indexes and credentials; with PostgreSQL, only the root
# admin key written on first start (`admin.key`).
VOLUME ["/var/lib/vigil"]
EXPOSE 7878

# No HEALTHCHECK: the image has no HTTP client (no curl or wget), and the same image runs
# `vigil writer` and `vigil reader`, which serve no HTTP at all, so an image-wide check of
# `/readyz` would mark them unhealthy. Check the api role where it runs: deploy/compose.yaml
# does, with bash alone.
#
# vigil runs as PID 1 and handles SIGTERM itself: the api drains requests, a writer finishes
# and acknowledges its batch, a reader its queries, then the store is flushed.
ENTRYPOINT ["vigil"]
CMD ["serve", "--listen", "0.0.0.0:7878", "--data-dir", "/var/lib/vigil"]
