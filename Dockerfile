# The dklb controller image: `dklb run` (see deploy/ for the Kubernetes manifests).
#
#   docker build -t dklb:0.1.0 .
#
# Stage 1 builds the dklb wheel and the wheels of all its dependencies; stage 2 installs them
# from that directory only (no index), so the runtime image holds no compiler, no source tree
# and no pip cache. The dependencies come from requirements.lock (security review S9): every
# one, transitive ones included, pinned to one version and to the sha256 of the files PyPI
# serves for it (`pip --require-hashes`), so a moved release, a compromised mirror or a newer
# PyYAML without the merge-key fix cannot get in; the lock's header says how to regenerate it. The controller runs as uid/gid 65532 (non-root) and keeps its SQLite
# database on the volume /var/lib/dklb: mount a PersistentVolumeClaim there. The schema is
# migrated by the controller itself on start (`migrate.open_store`), so there is no separate
# migration step. No HEALTHCHECK: under Kubernetes the Deployment's probes (/healthz, /readyz
# on port 9420) do that job.
#
# Hardening (security review S11): both stages start from python:3.11-slim pinned by digest (a
# tag can be moved under you; a digest names exactly one image); the runtime stage has no pip,
# setuptools or wheel (nothing can install into it at run time), and holds the controller alone:
# the local stand-ins (edgelb_local, localcluster: standins/pyproject.toml) are neither copied
# nor installed.
#
# The digest below was NOT resolved from here (this repository's build machine reaches no
# container registry): it is the python:3.11-slim digest found pinned in public Dockerfiles.
# Verify it, and move it forward for security updates, with
#   docker buildx imagetools inspect python:3.11-slim      (the "Digest:" line)
# then build with --build-arg PYTHON_IMAGE=python:3.11-slim@sha256:<that digest> or edit it here.
# A wrong digest fails the build ("not found"); it never pulls something else.
ARG PYTHON_IMAGE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# Exactly the packages listed in pyproject.toml's [tool.setuptools] packages: the controller,
# without the local stand-ins (standins/pyproject.toml), which are development tools.
COPY requirements.lock pyproject.toml ./
COPY engine engine
COPY states states
COPY migrations migrations
# The dependencies exactly as locked (a file whose hash is not in the lock fails the build), then
# dklb itself, alone: --no-deps, so nothing unlocked is resolved beside it. Stage 2's install
# resolves dklb's requirements against these wheels only. (Building dklb's wheel fetches its build
# backend, setuptools, which the runtime image does not contain.)
RUN pip wheel --wheel-dir /wheels --require-hashes -r requirements.lock \
 && pip wheel --wheel-dir /wheels --no-deps .

FROM ${PYTHON_IMAGE}
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
RUN groupadd --gid 65532 dklb \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /var/lib/dklb \
      --shell /usr/sbin/nologin dklb \
 && mkdir -p /var/lib/dklb \
 && chown 65532:65532 /var/lib/dklb \
 && chmod 0700 /var/lib/dklb
# The wheels are bind-mounted from the build stage (BuildKit, Docker's default builder since
# 23.0), so they never become a layer of this image.
# Then pip, setuptools and wheel go (pip last: it uninstalls itself), and the smoke test runs
# without them: nothing dklb imports may need them.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels dklb \
 && pip uninstall -y setuptools wheel pip \
 && dklb --help >/dev/null \
 && python -c "import engine.app, engine.store.migrate, migrations" \
 && ! python -c "import edgelb_local" 2>/dev/null \
 && ! python -c "import localcluster" 2>/dev/null \
 && ! python -m pip --version 2>/dev/null
USER 65532:65532
WORKDIR /var/lib/dklb
VOLUME ["/var/lib/dklb"]
ENV DKLB_DATABASE=/var/lib/dklb/dklb.db
# /healthz, /readyz and /metrics on every interface, in or out of a Pod (outside a cluster
# `dklb run` would default to the loopback interface, which nothing outside a container reaches).
ENV DKLB_HTTP_LISTEN=0.0.0.0:9420
EXPOSE 9420
ENTRYPOINT ["dklb"]
CMD ["run"]
