# The image every pipeline step runs in (CPU): this package installed non-editably with its
# pipeline extra (kfp), so kfp's lightweight components need no install at run time.
#   docker build -t facetrain:0.1.0 .
#   docker run --rm facetrain:0.1.0 python -m trainer debug=smoke
# The TPU variant builds on this one: Dockerfile.tpu.
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2

# Only what the package build needs (see .dockerignore); copied apart from the working folder
# so that the installed copy, not the sources, is what runs.
COPY . /tmp/facetrain-src
RUN python -m pip install --upgrade pip \
    && python -m pip install "/tmp/facetrain-src[pipeline]" \
    && python -m pip check \
    && rm -rf /tmp/facetrain-src

# Steps write their outputs into kfp's artifact folders; this is only the default folder
# for commands run by hand (runs/, tensorflow_datasets/).
WORKDIR /workspace
ENV TFDS_DATA_DIR=/workspace/tensorflow_datasets
# kfp sets each step's own command; this default only answers `docker run IMAGE`.
CMD ["python", "-m", "trainer", "--help"]
