"""The whole local stack for `dev`, the tests and the benchmarks.

Uses the configured broker and database where they answer; otherwise starts
Tansu and a private PostgreSQL. Everything it started, it stops.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field

import asyncpg

from suspensions.local.broker import LocalBroker
from suspensions.local.ports import port_open
from suspensions.local.postgres import LocalPostgres
from workers.runtime.config import Settings
from workers.runtime.db.migrate import migrate
from workers.runtime.kafka import create_topics

log = logging.getLogger(__name__)


async def database_reachable(settings: Settings) -> bool:
    try:
        conn = await asyncpg.connect(**{**settings.database_connect_args(), "timeout": 2})
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False
    await conn.close()
    return True


def broker_reachable(bootstrap_servers: str) -> bool:
    host, _, port = bootstrap_servers.split(",")[0].rpartition(":")
    return bool(port.isdigit()) and port_open(host or "127.0.0.1", int(port))


@dataclass
class LocalStack:
    base: Settings = field(default_factory=Settings)
    broker: LocalBroker | None = None
    postgres: LocalPostgres | None = None
    settings: Settings | None = None  # the settings in use, once started

    async def start(self) -> Settings:
        """Returns the settings that point at the services in use."""
        overrides: dict[str, object] = {}
        configured_broker = "SUSPENSIONS_KAFKA_BOOTSTRAP_SERVERS" in os.environ
        if configured_broker and broker_reachable(self.base.kafka_bootstrap_servers):
            log.info("using the configured broker", extra={"bootstrap": self.base.kafka_bootstrap_servers})
        else:
            self.broker = LocalBroker().start()
            overrides["kafka_bootstrap_servers"] = self.broker.bootstrap_servers
            log.info("started the local broker (tansu)", extra={"bootstrap": self.broker.bootstrap_servers})
        if await database_reachable(self.base):
            log.info("using the configured PostgreSQL")
        else:
            self.postgres = await asyncio.to_thread(LocalPostgres().start)
            overrides["database_url"] = self.postgres.url
            log.info("started a private PostgreSQL", extra={"url": self.postgres.url})
        settings = self.base.model_copy(update=overrides)
        await migrate(**settings.database_login_args())
        await create_topics(settings)
        self.settings = settings
        return settings

    def stop(self) -> None:
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None
