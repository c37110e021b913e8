"""The runtime every worker shares: configuration, Kafka and PostgreSQL clients, the retry loop,
publishing, the outbox, the batch loop, dead letters, metrics, health and logs.

It imports the contract (``models``, ``topics``) and nothing of the workers above it."""
