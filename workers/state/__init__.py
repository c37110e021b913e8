"""State worker: applies suspension commands to PostgreSQL and publishes suspension.state."""
