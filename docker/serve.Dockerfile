# Serving image: `mlflow models serve` of a registered model against the tracking server.
# Our own image, not `mlflow models build-docker`: build-docker bakes one model version in and
# installs its requirements at build time from the internet; this image reuses the training
# image's pinned, tested environment (the pyfunc imports facelens) and serves whatever
# version the alias points to when the container starts (MODEL_URI, e.g.
# models:/facelens-expression@champion, read from MLFLOW_TRACKING_URI).
ARG BASE=facelens:latest
FROM ${BASE}
ENV MODEL_URI=models:/facelens-expression@champion
EXPOSE 5001
ENTRYPOINT ["sh", "-c", "exec mlflow models serve -m \"$MODEL_URI\" --env-manager local --host 0.0.0.0 --port 5001"]
