# The dklb controller image. The database lives on the volume /var/lib/dklb (mount a
# PersistentVolumeClaim there); the schema is migrated by the controller on start.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md alembic.ini ./
COPY engine engine
COPY states states
COPY migrations migrations
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --uid 65532 --user-group --no-create-home --home-dir /var/lib/dklb dklb \
 && mkdir -p /var/lib/dklb && chown dklb:dklb /var/lib/dklb && chmod 0700 /var/lib/dklb
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 65532:65532
WORKDIR /var/lib/dklb
VOLUME ["/var/lib/dklb"]
ENV DKLB_DATABASE=/var/lib/dklb/dklb.db
ENTRYPOINT ["dklb"]
CMD ["--help"]
