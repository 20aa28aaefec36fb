# A matrix cell's build environment: compilers, CMake and a Python with venv, no network needed to
# build this image. nvcc comes from the host's CUDA toolkit, mounted read-only at /usr/local/cuda.
ARG BASE
FROM ${BASE}
LABEL org.wheelflow.role="builder"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 CUDA_HOME=/usr/local/cuda
RUN python3 -m venv /opt/wheelflow
COPY build-cell.sh /usr/local/bin/wheelflow-build-cell
RUN chmod 0755 /usr/local/bin/wheelflow-build-cell
