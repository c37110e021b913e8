"""`suspensions doctor`: is this deployment able to run, with the configured settings, and if not why.

Each check says OK or FAIL, what it found, and how to fix it. The checks run in order and a
check whose dependency failed is reported as skipped (FAIL), never as OK.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from topics import ALL_TOPICS
from workers.registry import WORKERS
from workers.runtime.broker_check import check_broker
from workers.runtime.config import Settings
from workers.runtime.db.migrate import migration_files
from workers.runtime.db.pool import describe
from workers.runtime.kafka import make_admin


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "status": "OK" if self.ok else "FAIL"}


async def run_checks(settings: Settings) -> list[Check]:
    checks = await _kafka_checks(settings)
    checks += await _database_checks(settings)
    return checks


async def _kafka_checks(settings: Settings) -> list[Check]:
    broker = await check_broker(settings)
    protocol = settings.kafka_security_protocol
    if not broker.ok:
        skipped = "skipped: the broker cannot be used"
        return [Check(f"broker {broker.address} ({protocol})", False, broker.cause or "",
                      "check SUSPENSIONS_KAFKA_BOOTSTRAP_SERVERS and the SUSPENSIONS_KAFKA_SECURITY_*/SSL_*/SASL_* "
                      "settings"),
                Check("topics", False, skipped), Check("consumer groups", False, skipped)]
    checks = [Check(f"broker {broker.address} ({protocol})", True,
                    "answers the Kafka protocol" + (", TLS verified" if settings.kafka_uses_tls else "")
                    + (f", authenticated with {settings.kafka_sasl_mechanism}"
                       if protocol.startswith("SASL_") else ""))]
    admin = make_admin(settings)
    try:
        await admin.start()
        checks += await _topic_checks(admin, settings)
        checks.append(await _group_check(admin, settings))
    except KafkaError as error:
        checks.append(Check("topics and groups", False, f"{type(error).__name__}: {error}"))
    finally:
        await admin.close()
    return checks


async def _topic_checks(admin: AIOKafkaAdminClient, settings: Settings) -> list[Check]:
    described = await admin.describe_topics([spec.name for spec in ALL_TOPICS])
    found = {topic["topic"]: topic for topic in described if topic.get("error_code", 0) == 0}
    policies = await _cleanup_policies(admin, sorted(found))
    checks = []
    for spec in ALL_TOPICS:
        name = f"topic {spec.name}"
        if spec.name not in found:
            checks.append(Check(name, False, "missing", "run `suspensions topics create`"))
            continue
        expected_partitions = spec.partitions or settings.topic_partitions
        partitions = len(found[spec.name]["partitions"])
        expected_policy = spec.configs()["cleanup.policy"]
        policy = policies.get(spec.name)
        problems = []
        if partitions != expected_partitions:
            problems.append(f"{partitions} partitions, expected {expected_partitions}")
        if policy is not None and policy != expected_policy:
            problems.append(f"cleanup.policy={policy}, expected {expected_policy}")
        detail = f"{partitions} partitions, cleanup.policy={policy or 'not reported by the broker'}"
        checks.append(Check(name, not problems, "; ".join(problems) or detail,
                            "recreate the topic as the catalogue declares it (topics/catalogue.py)" if problems else ""))
    return checks


async def _cleanup_policies(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, str]:
    """cleanup.policy of each topic, as far as the broker answers DescribeConfigs."""
    if not names:
        return {}
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in names])
    except (KafkaError, ValueError, TypeError):
        return {}
    policies = {}
    for response in responses:
        for resource in response.resources:
            # (error_code, error_message, resource_type, resource_name, config_entries)
            for entry in resource[4]:
                if entry[0] == "cleanup.policy":
                    policies[resource[3]] = entry[1]
    return policies


async def _group_known(admin: AIOKafkaAdminClient, group: str) -> bool:
    """Asked one group at a time (the local broker garbles a response about several). An unknown group is
    'Dead' on Apache Kafka and 'Empty' with no protocol type on the local broker."""
    for response in await admin.describe_consumer_groups([group]):
        # (error_code, group_id, state, protocol_type, protocol, members, ...)
        for described in response.groups:
            if described[1] == group and described[2] != "Dead" and (described[3] or described[5]):
                return True
    return False


async def _group_check(admin: AIOKafkaAdminClient, settings: Settings) -> Check:
    missing = [f"{spec.group(settings)} ({spec.name})" for spec in WORKERS
               if not await _group_known(admin, spec.group(settings))]
    if missing:
        return Check("consumer groups", False, f"not known to the broker: {', '.join(missing)}",
                     "start the workers (`suspensions run`); a group exists once its first member joined")
    return Check("consumer groups", True, ", ".join(spec.group(settings) for spec in WORKERS))


async def _database_checks(settings: Settings) -> list[Check]:
    name = f"PostgreSQL {settings.database_location}"
    try:
        conn = await asyncio.wait_for(asyncpg.connect(**settings.database_connect_args()), 12)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        return [Check(name, False, describe(error),
                      "check SUSPENSIONS_DATABASE_URL (sslmode, sslrootcert, ...) and SUSPENSIONS_DATABASE_PASSWORD"),
                Check("migrations", False, "skipped: PostgreSQL cannot be used")]
    try:
        version = await conn.fetchval("SHOW server_version")
        tls = await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        checks = [Check(name, True, f"server {version}" + (", TLS" if tls else ", no TLS"))]
        applied = set()
        if await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL"):
            applied = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
    finally:
        await conn.close()
    pending = [version for version, _ in migration_files() if version not in applied]
    checks.append(Check("migrations", not pending,
                        f"pending: {', '.join(pending)}" if pending else f"all {len(applied)} applied",
                        "run `suspensions db migrate`" if pending else ""))
    return checks
