# One image for all five services: `ekiben serve <name>`, or `ekiben migrate`.
# docker-compose.yml runs the whole stack from it; tests/unit/test_compose.py checks both.
#
#   docker build -t ekiben .
#   docker run --rm -p 8000:8000 -e EKIBEN_GATEWAY_HTTP__HOST=0.0.0.0 ... ekiben serve gateway
#
# No 'embedded' extra: in containers NATS, PostgreSQL and S3 are real servers of their own.

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: a virtualenv with Ekiben and its dependencies ------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/ekiben
WORKDIR /src

# The dependencies first, in a layer of their own that a change to the code does not
# invalidate: install the project with empty packages, then remove it again.
COPY pyproject.toml README.md ./
RUN mkdir shared services \
    && touch shared/__init__.py services/__init__.py \
    && /opt/ekiben/bin/pip install . \
    && /opt/ekiben/bin/pip uninstall --yes ekiben \
    && rm -rf shared services

COPY shared ./shared
COPY services ./services
RUN /opt/ekiben/bin/pip install --no-deps . \
    && /opt/ekiben/bin/ekiben --help > /dev/null

# --- runtime: the virtualenv on a clean base, run by an unprivileged user ---------------
FROM ${PYTHON_IMAGE}
ENV PATH=/opt/ekiben/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 ekiben \
    && useradd --system --uid 10001 --gid ekiben --create-home --home-dir /home/ekiben \
       --shell /usr/sbin/nologin ekiben
COPY --from=build /opt/ekiben /opt/ekiben
USER 10001:10001
WORKDIR /home/ekiben

# The services' default HTTP ports: gateway, registry, builder, deployer, dashboard.
EXPOSE 8000 8001 8002 8003 8080
ENTRYPOINT ["ekiben"]
CMD ["serve", "gateway"]
