FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 fonts-dejavu-core && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY ocrhub ocrhub
COPY ocr_core ocr_core
COPY bots bots
COPY sinks sinks
RUN pip install --no-cache-dir .
ENV OCRHUB_DATA_DIR=/data
CMD ["ocrhub", "up"]
