# The isthmus image: the `isthmus` command, which is both the control plane and the sidecar proxy.
#
# The manifests `isthmus install` prints name this image (ghcr.io/isthmus-mesh/isthmus:<version>)
# and give every container its full command line: `isthmus identity`, `isthmus destination`,
# `isthmus proxy-injector`, and `isthmus proxy` for injected sidecars. The embedded cluster's
# runner runs those same command lines with the `isthmus` of the environment the cluster was
# started from; so this image sets no ENTRYPOINT or CMD that the manifests would depend on.
#
#   docker build -t ghcr.io/isthmus-mesh/isthmus:0.1.0 .
#
# Not built or tested on the project's development machines (they have no container runtime);
# see docs/architecture.md, "Control plane and injection".
FROM python:3.11-slim

# The user the manifests' securityContext runs as (runAsUser 2103, runAsNonRoot).
RUN groupadd --gid 2103 isthmus && useradd --uid 2103 --gid 2103 --no-create-home --shell /usr/sbin/nologin isthmus

WORKDIR /build
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir . && rm -rf /build

WORKDIR /
USER 2103:2103
