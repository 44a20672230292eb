# The vigie binary, ONNX Runtime and the shipped model in a small runtime
# image, run as an unprivileged user. The paths match k8s/base/config.yaml:
#   /usr/local/bin/vigie
#   /usr/lib/vigie/libonnxruntime.so     (ORT_DYLIB_PATH, for the scorer)
#   /usr/share/vigie/models/hosp_risk    (the scorer's and drift's model_dir)
#   /var/lib/vigie                       (writable: ingest's checkpoints and quarantine)
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake libssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin vigie

# ONNX Runtime's shared library, from the same wheel (PyPI) scripts/setup
# installs for the tests.
FROM python:3.11-slim-bookworm AS ort
RUN pip install --no-cache-dir onnxruntime==1.32.0 \
    && cp "$(python -c 'import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))')"/capi/libonnxruntime.so.1.32.0 /libonnxruntime.so

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/vigie && chown 65534:65534 /var/lib/vigie
COPY --from=build /src/target/release/vigie /usr/local/bin/vigie
COPY --from=ort /libonnxruntime.so /usr/lib/vigie/libonnxruntime.so
COPY models/hosp_risk /usr/share/vigie/models/hosp_risk
# The weights are DVC's, not git's: scripts/train or scripts/setup first.
RUN test -s /usr/share/vigie/models/hosp_risk/1.0.0/model.onnx
ENV ORT_DYLIB_PATH=/usr/lib/vigie/libonnxruntime.so \
    VIGIE__CONSUMERS__SINKS__SCORER__MODEL_DIR=/usr/share/vigie/models/hosp_risk \
    VIGIE__CONSUMERS__SINKS__DRIFT__MODEL_DIR=/usr/share/vigie/models/hosp_risk \
    VIGIE__PRODUCERS__CHECKPOINT_DIR=/var/lib/vigie/checkpoints \
    VIGIE__PRODUCERS__QUARANTINE_DIR=/var/lib/vigie/quarantine
WORKDIR /var/lib/vigie
USER 65534:65534
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/vigie"]
