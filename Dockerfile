# One image recipe for the three services. The build argument SERVICE picks the binary:
#
#   docker build --build-arg SERVICE=auth-service -t auth-service .
#
# Targets:
#   runtime (the default, last stage): compiles the services from source in BUILDER_IMAGE (a
#       Rust image, rust:1.95-bookworm) and copies SERVICE's binary into RUNTIME_IMAGE
#       (debian:bookworm-slim). This is what `docker compose up` uses on a normal machine.
#   prebuilt: copies a binary built on the host instead. The build context is then a directory
#       that holds the binary under the service's name (nothing else is read from it), e.g.
#
#           cargo build --release -p auth-service
#           mkdir -p target/docker-context && cp target/release/auth-service target/docker-context/
#           docker build -f Dockerfile --target prebuilt --build-arg SERVICE=auth-service \
#               -t auth-service target/docker-context
#
#       For machines that cannot pull a Rust image (scripts/compose-proof.sh does this, with
#       RUNTIME_IMAGE set to a locally built Debian image; see docker/README.md). The binary must
#       be linked against a glibc no newer than RUNTIME_IMAGE's (Debian bookworm: 2.36).
#
# Both targets give the same image: the binary at /usr/local/bin/$SERVICE (and the link
# /usr/local/bin/service used as the entrypoint), run as the unprivileged user `app`
# (uid/gid 10001), with a HEALTHCHECK that runs `$SERVICE healthcheck` (each binary GETs its own
# /healthz and exits 0 or 1). No package is installed into the runtime image: TLS roots are
# compiled into the binaries (webpki-roots), so not even a CA bundle is needed.
#
# Stage order matters for the classic (non-BuildKit) builder, which builds every stage up to
# the target: `prebuilt` comes before the builder stage, so building it never needs the Rust
# image.

ARG BUILDER_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---- runtime base: the unprivileged user, shared by both final targets ----------------------
FROM ${RUNTIME_IMAGE} AS runtime-base
RUN groupadd --gid 10001 app \
 && useradd --uid 10001 --gid app --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin app

# ---- prebuilt: a binary from the build context ----------------------------------------------
FROM runtime-base AS prebuilt
ARG SERVICE
COPY ${SERVICE} /usr/local/bin/${SERVICE}
RUN test -n "${SERVICE}" && test -x "/usr/local/bin/${SERVICE}" \
 && ln -s "${SERVICE}" /usr/local/bin/service
USER 10001:10001
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/service", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/service"]

# ---- builder: compiles the three services from the workspace --------------------------------
# One cargo invocation for all three binaries, independent of SERVICE: the three image builds
# of `docker compose build` then share one builder stage (identical steps are built once) and
# the dependencies are compiled once, instead of three times.
FROM ${BUILDER_IMAGE} AS builder
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the target directory between builds (BuildKit). They are
# `locked` because cargo's own lock on the registry lives outside the mount (in CARGO_HOME):
# concurrent builds sharing the mount would race unpacking the same crates.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p auth-service -p user-service -p notification-service \
 && mkdir -p /out \
 && install -m 0755 target/release/auth-service target/release/user-service \
        target/release/notification-service /out/

# ---- runtime (default): the binary compiled above --------------------------------------------
FROM runtime-base AS runtime
ARG SERVICE
COPY --from=builder /out/${SERVICE} /usr/local/bin/${SERVICE}
RUN test -n "${SERVICE}" && ln -s "${SERVICE}" /usr/local/bin/service
USER 10001:10001
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/service", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/service"]
