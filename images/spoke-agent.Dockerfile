# syntax=docker/dockerfile:1
# The spoke agent, deployed on each managed cluster by the AddOnTemplate
# (addon_templates/addontemplate.yaml; image from the AGENT_IMAGE variable).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY fl_contract fl_contract
COPY fl_kube fl_kube
COPY fl_core fl_core
COPY spoke_agent spoke_agent
RUN /opt/venv/bin/pip install . \
 && /opt/venv/bin/python -m compileall -q /opt/venv

FROM ${PYTHON_IMAGE}
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:/usr/local/bin:/usr/bin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 65532:65532
EXPOSE 8081
ENTRYPOINT ["fl-spoke-agent"]
