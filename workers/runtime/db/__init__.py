"""PostgreSQL at the edge: the pool, migrations and the workers' repository."""
