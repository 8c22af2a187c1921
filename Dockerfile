FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY core core
COPY api api
COPY worker worker
COPY models models
COPY alembic alembic
RUN pip install --no-cache-dir -e '.[scale]'
ENV DENOCAP_DATA_DIR=/data
VOLUME /data
EXPOSE 8000
CMD ["denocap", "serve", "--host", "0.0.0.0"]
