# callbridge container image.
#
#   docker build -t callbridge .
#   docker run --rm -p 8080:8080 --env-file .env --stop-timeout 50 callbridge
#
# Two stages: a Rust build image compiles the release binary (dependencies in their own cached
# layer), and a small Debian runtime image runs it as a non-root user. No secret is baked in:
# OPENAI_API_KEY and the rest come from the environment at run time (see .env.example).
#
# Shutdown: SIGTERM starts the drain (readiness turns 503, new streams are refused, live calls
# get DRAIN_TIMEOUT, 30 s by default, then up to about 17 s more to end them and flush the store).
# Give the container 50 s before SIGKILL (`docker run --stop-timeout 50`, `docker stop -t 50`,
# compose `stop_grace_period: 50s`); fly.toml and railway.json set the same for their platforms.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# ---- build -------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src

# Dependencies first: this layer is rebuilt only when Cargo.toml or Cargo.lock change. The
# manifest names a [[bench]] target and the crate has a library and a binary, so each of those
# files must exist (as stubs) for cargo to read the manifest.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && echo '' > src/lib.rs \
    && echo 'fn main() {}' > benches/hot_path.rs \
    && cargo build --release --locked \
    && rm -rf src benches

# The sources. src/sim/fixtures.rs embeds fixtures/speech/* with include_bytes!, so fixtures/
# is part of the build.
COPY src ./src
COPY benches ./benches
COPY fixtures ./fixtures
# COPY keeps the files' own modification times, which can be older than the stub build above;
# touching the crate roots makes cargo rebuild the crate instead of keeping the stub binary.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked \
    && install -D -m 0755 target/release/callbridge /out/callbridge

# ---- runtime -----------------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim AS runtime

# ca-certificates: the system roots for outbound HTTPS (the Realtime WebSocket itself carries
# its own webpki roots). Nothing else is installed: the health check below uses bash, which
# the slim image already has.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# A fixed non-root user; /app/data (CALLBRIDGE_DATA_DIR, the local SQLite store) is writable.
RUN groupadd --system --gid 10001 callbridge \
    && useradd --system --uid 10001 --gid callbridge --home-dir /app --shell /usr/sbin/nologin callbridge \
    && mkdir -p /app/data \
    && chown -R callbridge:callbridge /app

COPY --from=build /out/callbridge /usr/local/bin/callbridge

WORKDIR /app
USER 10001:10001

ENV PORT=8080 \
    HOST=0.0.0.0 \
    LOG_FORMAT=json \
    RUST_LOG=info \
    CALLBRIDGE_DATA_DIR=/app/data

EXPOSE 8080

# Liveness without curl: bash opens a TCP connection to the server's own port, sends a plain
# HTTP/1.0 request for /healthz and checks the status line for 200.
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${PORT:-8080} && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]

# The server drains on SIGTERM (and SIGINT).
STOPSIGNAL SIGTERM

ENTRYPOINT ["/usr/local/bin/callbridge"]
CMD ["serve"]
