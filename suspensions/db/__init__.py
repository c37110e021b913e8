"""PostgreSQL at the edge: migrations, connections and the repository (all SQL lives here)."""
