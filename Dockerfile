# slate container image.
#
#   docker build -t slate .
#   docker run --rm -p 8080:8080 -p 9091:9091 \
#       -v "$PWD/config.toml:/etc/slate/config.toml:ro" slate
#
# In a container the config MUST listen on all interfaces, or nothing outside the
# container can reach it:
#
#   [server]
#   listen = "0.0.0.0:8080"
#   admin_listen = "0.0.0.0:9091"   # only if the admin API should be reachable from outside;
#                                   # purges from outside then need [purge] token, because
#                                   # the default allow list is loopback only.
#
# and [upstream] url / [store] url must name addresses reachable from inside the container
# (not 127.0.0.1 of the host).
#
# No HEALTHCHECK: the runtime image has no curl or wget, and adding one only for that
# is not worth it. Point the orchestrator's HTTP probe at GET :9091/healthz instead
# (a Kubernetes httpGet probe, a load balancer's health check).

############################ build stage ############################
FROM rust:1-slim-bookworm AS build
WORKDIR /src

# 1. Dependencies only, cached in their own layer: this layer is rebuilt only when
#    Cargo.toml or Cargo.lock change. The dummy lib.rs/main.rs stand in for the real
#    sources so that cargo resolves and compiles every dependency.
#    (If Cargo.toml ever declares a build script or explicit [[bench]]/[[test]]/[[example]]
#    targets with paths, stub those files here too, or this step cannot parse the manifest.)
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src \
 && echo 'fn main() {}' > src/main.rs \
 && : > src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src

# 2. The real sources. COPY keeps the files' original timestamps, which can be older than
#    the dummy build's artifacts; touching them makes cargo rebuild the slate crate itself
#    (and only it) instead of linking the dummy.
COPY src ./src
RUN touch src/lib.rs src/main.rs \
 && cargo build --release --locked \
 && ./target/release/slate --version

############################ runtime stage ############################
FROM debian:bookworm-slim

# ca-certificates for https upstreams. Not version-pinned on purpose: it should track
# Debian's security updates at every rebuild.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 slate \
 && useradd --system --uid 10001 --gid slate --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin slate

COPY --from=build /src/target/release/slate /usr/local/bin/slate

WORKDIR /etc/slate
# Numeric, so that runtimes checking "runAsNonRoot" can verify it without /etc/passwd.
USER 10001:10001

# 8080: the proxy ([server] listen), 9091: admin ([server] admin_listen).
EXPOSE 8080 9091

# slate drains in-flight requests on SIGTERM (docker stop) and reloads on SIGHUP
# (docker kill --signal HUP).
ENTRYPOINT ["slate"]
CMD ["--config", "/etc/slate/config.toml"]
