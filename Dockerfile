# The action's image: one static binary and the public CA bundle on `scratch`.
#
# Releases (.github/workflows/release.yml) compile in the `build` stage, natively on an
# amd64 and an arm64 runner; musl makes the binary static and its own DNS resolver reads
# /etc/hosts and /etc/resolv.conf, so nothing else is needed at run time.
#
# Tests on a machine without the musl target pass in a static binary they built:
#   docker buildx build --build-arg BIN_IMAGE=<image with /out/ecr-build-push and
#   /out/ca-certificates.crt> --target runtime .
# BuildKit then never runs the `build` stage. No `# syntax=` line: the built-in frontend
# is enough, and it needs nothing pulled.
ARG BIN_IMAGE=build

FROM rust:1-alpine AS build
RUN apk add --no-cache musl-dev ca-certificates
WORKDIR /src
COPY Cargo.toml Cargo.lock action.yml ./
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin ecr-build-push \
    && mkdir -p /out/tmp \
    && chmod 1777 /out/tmp \
    && cp target/release/ecr-build-push /out/ \
    && cp /etc/ssl/certs/ca-certificates.crt /out/

FROM ${BIN_IMAGE} AS bin

FROM scratch AS runtime
COPY --from=bin /out/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=bin /out/ecr-build-push /ecr-build-push
# The direct push spools compressed layers here (deleted as soon as they are opened).
COPY --from=bin /out/tmp /tmp
ENTRYPOINT ["/ecr-build-push"]
