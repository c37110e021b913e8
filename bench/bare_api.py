"""The API case's baseline: a bare endpoint of the same framework (FastAPI on uvicorn) that does one Kafka
send and nothing else (no token, no validation of the contract, no database)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaProducer
from fastapi import FastAPI


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.producer = AIOKafkaProducer(bootstrap_servers=os.environ["SUSPENSIONS_KAFKA_BOOTSTRAP_SERVERS"],
                                          linger_ms=0)
    await app.state.producer.start()
    yield
    await app.state.producer.stop()


app = FastAPI(lifespan=lifespan)


@app.post("/send/{key}", status_code=202)
async def send(key: str) -> dict[str, str]:
    await app.state.producer.send_and_wait("bench.bare.api", b'{"bare": true}', key=key.encode())
    return {"key": key}
