"""Local stand-ins for production services: Tansu as the broker, an embedded PostgreSQL."""
