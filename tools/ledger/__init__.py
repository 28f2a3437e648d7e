"""The job queue on PostgreSQL: the database, its migrations, jobs and their planning, events and notifications."""
