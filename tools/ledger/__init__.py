"""The durable job ledger on PostgreSQL: database, migrations, jobs, workers and outputs."""
