FROM python:3.11-slim
# The torch wheel index: CPU wheels for CPU workers and the API, a CUDA index for GPU workers (docker-compose.yml).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY core core
COPY api api
COPY worker worker
COPY models models
COPY alembic alembic
# editable: the code runs from /app, beside the migrations it applies at start (a wheel would leave them out)
RUN pip install --no-cache-dir --extra-index-url "$TORCH_INDEX" -e '.[scale]'
ENV DENOCAP_DATA_DIR=/data
VOLUME /data
EXPOSE 8000
CMD ["denocap", "serve", "--host", "0.0.0.0"]
