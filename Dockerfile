# synthct algorithm container (grand-challenge, SynthRAD 2023 layout): /input → /output, `python -m algorithm`.
#
# Build from the repository root with the exported model packages in ./models/<region>/model.json:
#   docker build -t synthct-algorithm .
#   docker build --build-arg ORT_PACKAGE=onnxruntime==1.26.0 -t synthct-algorithm:cpu .   # CPU-only, ~1.8 GB smaller
# Run: `docker run IMAGE` = the grand-challenge job (/input → /output); `docker run IMAGE predict ARGS` = synthct
# predict inside the image (--model defaults to $SYNTHCT_MODELS); `docker run IMAGE --help`. See algorithm/entrypoint.py.
#
# Runtime choice: python:3.11-slim + onnxruntime-gpu 1.26.0 with CUDA 12.9 / cuDNN 9 from NVIDIA's pip wheels
# (the [cuda,cudnn] extras; onnxruntime.preload_dlls() finds them), instead of an nvidia/cuda base image. 1.26.0 is
# the last onnxruntime-gpu on PyPI built for CUDA 12 (1.28+ need CUDA 13, i.e. driver >= 580); CUDA 12 minor-version
# compatibility needs driver >= 525 and covers the T4 (sm_75). Without a usable GPU it runs on the CPU.
# No TensorRT: its PyPI package installs from NVIDIA's index at build time; the TensorRT backend stays import-guarded.
FROM python:3.11-slim-bookworm

ARG ORT_PACKAGE="onnxruntime-gpu[cuda,cudnn]==1.26.0"
ARG MODELS=models

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/opt/app \
    SYNTHCT_MODELS=/opt/app/models \
    MPLBACKEND=Agg \
    MPLCONFIGDIR=/tmp/matplotlib

RUN groupadd -r -g 10001 algorithm \
    && useradd -m --no-log-init -r -u 10001 -g algorithm algorithm \
    && mkdir -p /opt/app /input /output \
    && chown 10001:10001 /opt/app /input /output

COPY algorithm/requirements.txt /opt/app/requirements.txt
RUN python -m pip install --no-cache-dir -r /opt/app/requirements.txt "${ORT_PACKAGE}"

WORKDIR /opt/app
COPY --chown=root:root synthct/ /opt/app/synthct/
COPY --chown=root:root algorithm/ /opt/app/algorithm/
COPY --chown=root:root ${MODELS}/ /opt/app/models/

# Fail the build, not the first job, if the code cannot import or a model package does not verify. (The matplotlib
# cache made here is removed: at run time the user, any uid, makes its own in /tmp.)
RUN python -c "import algorithm.container, algorithm.backends, algorithm.entrypoint, algorithm.cli, algorithm.qa, \
synthct.body_mask, synthct.dicom, matplotlib.pyplot; \
from algorithm.cases import find_model_packages; \
from synthct.model_package import load_model_package; from pathlib import Path; \
found = find_model_packages(Path('/opt/app/models')); assert found, 'no model package under /opt/app/models'; \
[load_model_package(d, expected_region=r) for r, d in found.items()]; print('models:', sorted(found))" \
    && rm -rf /tmp/matplotlib

USER 10001:10001

ENTRYPOINT ["python", "-m", "algorithm"]
