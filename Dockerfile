# The service image: one image, the worker chosen by the command (`suspensions run state`, ...).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY suspensions ./suspensions
COPY models ./models
COPY topics ./topics
COPY workers ./workers
RUN pip install --no-cache-dir -c constraints.txt . \
    && groupadd --system --gid 10001 suspensions \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin suspensions
# Never root: the service needs no privilege, and secrets mounted for uid 10001 are readable by it alone.
USER 10001:10001
ENTRYPOINT ["suspensions"]
