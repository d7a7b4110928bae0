"""Storage: the database wrapper, migrations, ingestion and the read queries."""
