"""Every session is bounded (issue 27, part 1): what the settings give asyncpg, and what /readyz says."""

from __future__ import annotations

from workers.runtime.config import Settings
from workers.runtime.health import WorkerHealth, readiness


def test_every_session_carries_the_server_side_timeouts_and_the_client_waits_longer() -> None:
    args = Settings(database_statement_timeout_s=2.5, database_lock_timeout_s=10,
                    database_idle_in_transaction_timeout_s=60, database_command_timeout_s=1).database_connect_args()
    assert args["server_settings"] == {"statement_timeout": "2500", "lock_timeout": "2500",
                                       "idle_in_transaction_session_timeout": "60000"}
    # The client's own bound never fires before the server's: the server's error says more.
    assert args["command_timeout"] == 3.5
    assert args["timeout"] == Settings().database_connect_timeout_s


def test_the_api_sessions_take_their_shorter_bound() -> None:
    args = Settings(database_statement_timeout_s=30).database_connect_args(statement_timeout_s=4)
    assert args["server_settings"]["statement_timeout"] == "4000"
    assert args["command_timeout"] == 5


def test_a_stalled_retry_makes_the_worker_not_ready_until_it_succeeds() -> None:
    health = WorkerHealth("state", kafka_ok=True)
    health.assigned(2)
    assert readiness([health])[0] == 200
    stall = object()
    health.stalls[stall] = "retrying postgresql work after LockNotAvailableError: canceling statement"
    status, body = readiness([health])
    assert status == 503
    assert body["workers"]["state"]["not_ready_because"] == [health.stalls[stall]]  # type: ignore[index]
    del health.stalls[stall]
    assert readiness([health])[0] == 200
