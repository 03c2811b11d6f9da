"""Sales data: PostgreSQL schema and migrations, connections, the repository, the Kiel seed."""
