"""The service's workers: triggers (faust), state and billing (aiokafka + asyncpg)."""
