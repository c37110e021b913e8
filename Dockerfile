# The service image: one image, the worker chosen by the command (`suspensions run state`, ...).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY suspensions ./suspensions
COPY models ./models
COPY topics ./topics
COPY workers ./workers
RUN pip install --no-cache-dir .
USER nobody
ENTRYPOINT ["suspensions"]
