# syntax=docker/dockerfile:1
# One image for every pod of a DataJuicerJob: the operator, the runner and Ray, so that the Ray
# head, its workers and the runner share one Ray and one Python.
#
# BASE_IMAGE runs the image; BUILDER_IMAGE (the same Python, plus a C compiler and the Python
# headers) builds the wheel with its C extension. The defaults are public images;
# hack/build-image.sh builds both from Debian packages instead and passes them here.
#
# Runtime contract (the chart and the operator set it up):
#   - runs as uid/gid 10001, never root;
#   - works with a read-only root filesystem: HOME, TMPDIR and Ray's temp dir all live under /tmp,
#     which must be a writable mount (an emptyDir in Kubernetes, --tmpfs /tmp in podman).
ARG BASE_IMAGE=python:3.11-slim-bookworm
ARG BUILDER_IMAGE=python:3.11-bookworm

FROM ${BUILDER_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
# /opt/build: the tools that build the wheel; /opt/venv: what the image ships, without pip.
RUN python3 -m venv /opt/build && python3 -m venv --without-pip /opt/venv
WORKDIR /src
# pip trusts the CA bundle of the build secret `ca` when it is given (the file is mounted for
# the one RUN step only, never written into a layer); without it, the system's trust store.
COPY hack/image-build-requirements.txt hack/image-requirements.txt ./hack/
RUN --mount=type=secret,id=ca,required=false \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi; \
    /opt/build/bin/pip install --require-hashes --only-binary=:all: \
        -r hack/image-build-requirements.txt \
    && /opt/build/bin/pip --python /opt/venv/bin/python install --require-hashes \
        --only-binary=:all: --no-deps -r hack/image-requirements.txt
COPY pyproject.toml README.md ./
COPY runner ./runner
COPY operator ./operator
# The wheel is compiled here (with the C extension, which must build: `optional = true` in
# pyproject.toml would otherwise let a missing compiler pass silently).
ARG EXTRAS=""
RUN --mount=type=secret,id=ca,required=false \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi; \
    /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheels . \
    && /opt/build/bin/python -c "import glob, re, sys, zipfile; \
names = zipfile.ZipFile(glob.glob('/wheels/*.whl')[0]).namelist(); \
sys.exit(not any(re.search(r'dj_runner/ops/_kernels.*[.]so$', n) for n in names))" \
    && /opt/build/bin/pip --python /opt/venv/bin/python install --no-deps /wheels/*.whl \
    && if [ -n "$EXTRAS" ]; then \
        /opt/build/bin/pip --python /opt/venv/bin/python install \
            "$(ls /wheels/*.whl)[$EXTRAS]"; \
    fi \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib

FROM ${BASE_IMAGE}
ARG UID=10001
# Fixed ids, so that runAsUser/runAsGroup/fsGroup in the chart match the files' owner.
RUN groupadd --gid "${UID}" datajuicer \
    && useradd --uid "${UID}" --gid "${UID}" --no-create-home --home-dir /tmp \
        --shell /usr/sbin/nologin datajuicer
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    TMPDIR=/tmp \
    RAY_TMPDIR=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LANG=C.UTF-8
# Fails the build if the runtime's Python cannot load what the builder built.
RUN ["/opt/venv/bin/python", "-c", "import dj_runner.ops._kernels, dj_operator, ray, pyarrow, kopf"]
WORKDIR /tmp
USER ${UID}:${UID}
CMD ["dj-operator", "--help"]
