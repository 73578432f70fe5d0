# syntax=docker/dockerfile:1
# The hub manager: `make images`, or
#   docker build -f images/hub-manager.Dockerfile -t <registry>/hub-manager:<tag> .
# Runs as a numeric non-root user with a read-only root filesystem (deploy/manager.yaml).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY fl_contract fl_contract
COPY fl_kube fl_kube
COPY fl_core fl_core
COPY hub_manager hub_manager
# Non-editable install; bytecode compiled now because the root filesystem is read-only later.
RUN /opt/venv/bin/pip install . \
 && /opt/venv/bin/python -m compileall -q /opt/venv

FROM ${PYTHON_IMAGE}
COPY --from=build /opt/venv /opt/venv
# Applied by the manager at start: the add-on's own objects only. The hub RBAC files of
# addon_templates/ are applied by `make deploy`: the manager needs no rights on ClusterRoles.
COPY addon_templates/clustermanagementaddon.yaml \
     addon_templates/addontemplate.yaml \
     addon_templates/addondeploymentconfig.yaml \
     /opt/federated-learning/addon_templates/
ENV PATH=/opt/venv/bin:/usr/local/bin:/usr/bin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    ADDON_TEMPLATES_DIR=/opt/federated-learning/addon_templates
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["fl-hub-manager"]
