# Where built wheels are installed and smoke-tested: Python and pip only, no compilers.
ARG BASE
FROM ${BASE}
LABEL org.wheelflow.role="runtime"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/venv
COPY smoke.sh /usr/local/bin/wheelflow-smoke
RUN chmod 0755 /usr/local/bin/wheelflow-smoke
