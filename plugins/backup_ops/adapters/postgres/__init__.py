"""PostgreSQL: the client tools, the snapshot session and pg_dump, one module per idea."""
