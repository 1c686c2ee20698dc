# syntax=docker/dockerfile:1
# The image of the Kubernetes manifests (infra/k8s): the four Kurz binaries of one build in
# /usr/local/bin, on a distroless base, run as a non-root user. Each container picks its
# binary with `command` (the image has no shell and no default command):
#   /usr/local/bin/kurz-redirect, kurz-create, kurz-keypool (also `migrate` and
#   `wait-for-schema`), kurz-analytics.
# One image rather than four: the migration Job and the init containers must run the same
# build as the services, and one build compiles the shared crates once.
#
#   docker build -t registry.example/kurz:0.1.0 .
#
# At the repository root because the build needs the whole workspace as its context.
# Not built here: the machine this was written on has no container engine, so this file is
# kept to steps that can be read as correct (README "Deployment (Kubernetes)").

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep the crate registry and the target directory between builds (BuildKit),
# so a rebuild after a code change compiles Kurz's crates and not its dependencies again. The
# target directory is a cache, not part of the layer, so the binaries are copied out in the
# same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
        -p kurz-redirect -p kurz-create -p kurz-keypool -p kurz-analytics --bins \
    && mkdir -p /out \
    && cp target/release/kurz-redirect target/release/kurz-create \
        target/release/kurz-keypool target/release/kurz-analytics /out/

# glibc and libgcc (the binaries link them; no OpenSSL: Kurz speaks no TLS itself), CA
# certificates, and nothing else: no shell, no package manager. `nonroot` is uid 65532, the
# runAsUser of the manifests.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
