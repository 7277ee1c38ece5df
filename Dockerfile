# synthct algorithm container (grand-challenge, SynthRAD 2023 layout): /input → /output, `python -m synthct.algorithm`.
#
# Build from the repository root, with or without model packages baked in:
#   docker build -t synthct-algorithm .      # bakes ./models/<region>/ (or one package) if the checkout has ./models
#   docker build --build-arg MODELS= -t synthct-algorithm .              # no packages: weights come at run time
#   docker build --build-arg MODELS=path/to/packages -t synthct-algorithm .
#   docker build --build-arg ORT_PACKAGE=onnxruntime==1.26.0 -t synthct-algorithm:cpu .   # CPU-only, ~1.8 GB smaller
# Model packages at run time: grand-challenge's "algorithm model" (`synthct package` writes the tarball; the platform
# extracts it to /opt/ml/model/) when /opt/ml/model holds anything, else the baked ones (SPEC §13). Check an image
# against the platform's rules and limits with `synthct submission-check IMAGE --model-tarball model.tar.gz`.
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
# A glob that may match nothing: ./models when present. COPY needs one source that exists: the models README.
ARG MODELS=model[s]

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
COPY --chown=root:root algorithm/ /opt/app/synthct/algorithm/
COPY --chown=root:root algorithm/models-README.md ${MODELS} /opt/app/models/

# Fail the build, not the first job, if the code cannot import or a baked model package does not verify (none baked
# is fine: the job then needs /opt/ml/model). (The matplotlib cache made here is removed: at run time the user, any
# uid, makes its own in /tmp.)
RUN python -c "import synthct.algorithm.container, synthct.algorithm.backends, synthct.algorithm.entrypoint, \
synthct.algorithm.cli, synthct.algorithm.qa, synthct.body_mask, synthct.dicom, matplotlib.pyplot; \
from synthct.algorithm.cases import find_model_packages; \
from synthct.model_package import load_model_package; from pathlib import Path; \
problems = []; found = find_model_packages(Path('/opt/app/models'), problems); assert not problems, problems; \
[load_model_package(d, expected_region=r) for r, d in found.items()]; \
print('baked models:', sorted(found) or 'none (the job loads /opt/ml/model)')" \
    && rm -rf /tmp/matplotlib

USER 10001:10001

ENTRYPOINT ["python", "-m", "synthct.algorithm"]
