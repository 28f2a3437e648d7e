"""Versioned schema migrations: a `MIGRATIONS` list applied once each, safe when processes start together.

Each migration runs in its own transaction under a transaction-level advisory lock, so two processes
that start at the same moment apply it exactly once: the second waits for the lock, then sees the
version recorded in `atelier_migrations` and skips it. Never edit a migration that has shipped; append
a new one.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

__all__ = ["MIGRATIONS", "Migration", "applied_versions", "apply_migrations"]

# An arbitrary constant naming "Atelier's schema" for pg_advisory_xact_lock.
_LOCK_KEY = 0x41_74_65_6C


@dataclass(frozen=True)
class Migration:
    """One schema step: a version number, a name for people, and the SQL to run."""

    version: int
    name: str
    sql: str


_JOBS = """
CREATE TABLE jobs (
    id              uuid PRIMARY KEY,
    status          text NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'submitted', 'running', 'succeeded', 'failed', 'cancelled')),
    workflow        text NOT NULL,
    params          jsonb NOT NULL,
    priority        integer NOT NULL DEFAULT 0,
    owner           text NOT NULL DEFAULT 'anonymous',
    idempotency_key text UNIQUE,
    cache_key       text NOT NULL,
    use_cache       boolean NOT NULL DEFAULT true,
    vram_gb         double precision NOT NULL DEFAULT 0,
    estimated_seconds double precision,
    estimated_cost  double precision,
    actual_cost     double precision,
    gpu_seconds     double precision,
    attempts        integer NOT NULL DEFAULT 0,
    failures        integer NOT NULL DEFAULT 0,
    max_attempts    integer NOT NULL DEFAULT 5,
    worker          text,
    lease_expires_at timestamptz,
    server          text,
    cancel_requested boolean NOT NULL DEFAULT false,
    not_before      timestamptz NOT NULL DEFAULT now(),
    outputs         jsonb NOT NULL DEFAULT '[]'::jsonb,
    error           text,
    error_kind      text,
    cached_from     uuid REFERENCES jobs (id),
    previous_server text,
    recovered       boolean NOT NULL DEFAULT false,
    batch           text,
    batch_row       integer,
    created_at      timestamptz NOT NULL DEFAULT now(),
    claimed_at      timestamptz,
    submitted_at    timestamptz,
    started_at      timestamptz,
    finished_at     timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX jobs_claim_queued ON jobs (priority DESC, created_at) WHERE status = 'queued';
CREATE INDEX jobs_leased ON jobs (lease_expires_at) WHERE status IN ('submitted', 'running');
CREATE INDEX jobs_cache ON jobs (cache_key) WHERE status = 'succeeded';
-- Few indexes on purpose: every status change rewrites the row and adds an entry to each of them.
CREATE INDEX jobs_created ON jobs (created_at DESC);
CREATE INDEX jobs_batch ON jobs (batch, batch_row) WHERE batch IS NOT NULL;

CREATE FUNCTION atelier_jobs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- No payload: identical notifications of one transaction fold into one, so a batch wakes workers once.
    IF NEW.status = 'queued' THEN
        PERFORM pg_notify('atelier_jobs', '');
    END IF;
    IF NEW.cancel_requested AND (TG_OP = 'INSERT' OR NOT OLD.cancel_requested) THEN
        PERFORM pg_notify('atelier_cancel', NEW.id::text);
    END IF;
    IF NEW.status IN ('succeeded', 'failed', 'cancelled')
       AND (TG_OP = 'INSERT' OR NEW.status IS DISTINCT FROM OLD.status) THEN
        PERFORM pg_notify('atelier_status', NEW.id::text || ' ' || NEW.status);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_notify AFTER INSERT OR UPDATE ON jobs FOR EACH ROW EXECUTE FUNCTION atelier_jobs_notify();

-- A queue table churns: keep its statistics and dead rows in check sooner than the defaults would.
ALTER TABLE jobs SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);

-- Claim the next job for a server under a lease: a lapsed lease first (its worker died), else the best
-- queued job that fits the free VRAM. Sorting and bitmap scans are off inside the function so that the
-- partial indexes give the order even when the table's statistics are stale (a batch just arrived);
-- otherwise the planner may read every queued row for each claim.
CREATE FUNCTION atelier_claim(p_worker text, p_server text, p_vram double precision, p_known text[],
                              p_lease double precision)
RETURNS SETOF jobs LANGUAGE plpgsql SET enable_sort = off SET enable_bitmapscan = off AS $$
BEGIN
RETURN QUERY
WITH lapsed AS (
    SELECT id FROM jobs
    WHERE status IN ('submitted', 'running') AND lease_expires_at < now()
      AND (server IS NULL OR server = p_server OR NOT (server = ANY(p_known)))
    ORDER BY lease_expires_at LIMIT 1 FOR UPDATE SKIP LOCKED
), waiting AS (
    SELECT id FROM jobs
    WHERE status = 'queued' AND not_before <= now() AND vram_gb <= p_vram
    ORDER BY priority DESC, created_at LIMIT 1 FOR UPDATE SKIP LOCKED
), candidate AS (
    SELECT id, true AS recovered FROM lapsed
    UNION ALL SELECT id, false FROM waiting
    LIMIT 1
), claimed AS (
UPDATE jobs AS j SET
    status = CASE WHEN old.status = 'queued' THEN 'submitted' ELSE old.status END,
    server = CASE WHEN old.status = 'queued' THEN p_server ELSE coalesce(old.server, p_server) END,
    previous_server = old.server,
    recovered = candidate.recovered,
    attempts = old.attempts + 1,
    worker = p_worker,
    lease_expires_at = now() + make_interval(secs => p_lease),
    claimed_at = now(),
    updated_at = now()
FROM candidate JOIN jobs AS old ON old.id = candidate.id
WHERE j.id = candidate.id
RETURNING j.*
)
SELECT * FROM claimed;
END $$;

CREATE TABLE workers (
    id          text PRIMARY KEY,
    host        text NOT NULL,
    pid         integer NOT NULL,
    servers     text[] NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now(),
    stopped_at  timestamptz
);
"""

_MEMORY = """
ALTER TABLE jobs ADD COLUMN rating smallint CHECK (rating BETWEEN 1 AND 5);
ALTER TABLE jobs ADD COLUMN thumb smallint CHECK (thumb IN (-1, 1));
ALTER TABLE jobs ADD COLUMN tags text[] NOT NULL DEFAULT '{}';
ALTER TABLE jobs ADD COLUMN memory_indexed_at timestamptz;
CREATE INDEX jobs_to_index ON jobs (finished_at) WHERE status = 'succeeded' AND memory_indexed_at IS NULL;
"""

_EVENTS = """
CREATE TABLE job_events (
    seq         bigserial PRIMARY KEY,
    job_id      uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt     integer NOT NULL,
    kind        text NOT NULL,
    data        jsonb NOT NULL DEFAULT '{}'::jsonb,
    preview     bytea,
    preview_type text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_events_by_job ON job_events (job_id, seq);

CREATE FUNCTION atelier_job_event_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('atelier_events', NEW.job_id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER job_events_notify AFTER INSERT ON job_events
    FOR EACH ROW EXECUTE FUNCTION atelier_job_event_notify();

CREATE TABLE chat_threads (
    id          text PRIMARY KEY,
    owner       text NOT NULL,
    title       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chat_threads_by_owner ON chat_threads (owner, updated_at DESC);
"""

_TIMINGS = """
CREATE TABLE workflow_timings (
    workflow    text NOT NULL,
    server      text NOT NULL,
    runs        integer NOT NULL,
    avg_seconds double precision NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workflow, server)
);

-- Every real (not cached) success teaches the catalog: an exponential moving average (weight 0.2 for the newest
-- run, the first run taken as is) of ComfyUI's execution time per workflow and server.
CREATE FUNCTION atelier_learn_timing() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO workflow_timings AS t (workflow, server, runs, avg_seconds)
    VALUES (NEW.workflow, NEW.server, 1, NEW.gpu_seconds)
    ON CONFLICT (workflow, server) DO UPDATE
        SET runs = t.runs + 1, avg_seconds = t.avg_seconds + 0.2 * (EXCLUDED.avg_seconds - t.avg_seconds),
            updated_at = now();
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_learn_timing AFTER UPDATE OF status ON jobs
    FOR EACH ROW WHEN (NEW.status = 'succeeded' AND OLD.status IS DISTINCT FROM 'succeeded'
                       AND NEW.gpu_seconds IS NOT NULL AND NEW.server IS NOT NULL AND NEW.cached_from IS NULL)
    EXECUTE FUNCTION atelier_learn_timing();
"""

_PROMPTS = """
CREATE TABLE prompts (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    category    text NOT NULL DEFAULT 'general',
    purpose     text,
    tags        text[] NOT NULL DEFAULT '{}',
    description text NOT NULL DEFAULT '',
    latest      integer NOT NULL DEFAULT 0,
    author      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX prompts_purpose ON prompts (purpose) WHERE purpose IS NOT NULL;
CREATE TABLE prompt_versions (
    prompt      text NOT NULL REFERENCES prompts (name) ON DELETE CASCADE,
    version     integer NOT NULL CHECK (version > 0),
    template    text NOT NULL,
    negative    text NOT NULL DEFAULT '',
    defaults    jsonb NOT NULL DEFAULT '{}'::jsonb,
    note        text NOT NULL DEFAULT '',
    author      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (prompt, version)
);
CREATE TABLE ab_tests (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    purpose     text,
    status      text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'stopped')),
    min_ratings integer NOT NULL DEFAULT 20 CHECK (min_ratings > 0),
    description text NOT NULL DEFAULT '',
    author      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    stopped_at  timestamptz
);
-- The designer applies the running test of an image's purpose: at most one per purpose.
CREATE UNIQUE INDEX ab_tests_running_purpose ON ab_tests (purpose) WHERE status = 'running' AND purpose IS NOT NULL;
CREATE TABLE ab_variants (
    test        text NOT NULL REFERENCES ab_tests (name) ON DELETE CASCADE,
    label       text NOT NULL CHECK (label ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$'),
    position    integer NOT NULL,
    prompt      text,
    version     integer,
    workflow    text,
    weight      integer NOT NULL DEFAULT 1 CHECK (weight BETWEEN 1 AND 1000),
    PRIMARY KEY (test, label),
    FOREIGN KEY (prompt, version) REFERENCES prompt_versions (prompt, version),
    CHECK (prompt IS NOT NULL OR workflow IS NOT NULL),
    CHECK ((prompt IS NULL) = (version IS NULL))
);
-- Which prompt version (and A/B variant) made each job; ratings stay on the job row.
CREATE TABLE prompt_uses (
    job_id      uuid PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    prompt      text,
    version     integer,
    ab_test     text,
    variant     text,
    request_key text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (prompt, version) REFERENCES prompt_versions (prompt, version),
    FOREIGN KEY (ab_test, variant) REFERENCES ab_variants (test, label) ON DELETE CASCADE
);
CREATE INDEX prompt_uses_version ON prompt_uses (prompt, version) WHERE prompt IS NOT NULL;
CREATE INDEX prompt_uses_variant ON prompt_uses (ab_test, variant) WHERE ab_test IS NOT NULL;
"""

_AFFINITY = """
ALTER TABLE jobs ADD COLUMN models text[] NOT NULL DEFAULT '{}';

-- The claim as before (a lapsed lease first, else the best queued job that fits p_vram), plus affinity: among
-- the next 100 queued jobs of the top priority, the oldest whose models (folder/file) are all in p_models — the
-- models the claiming server has loaded — goes first, unless the queue's oldest job has already waited
-- p_affinity_seconds (so affinity delays nobody for long). Empty p_models or 0 seconds: the old order.
DROP FUNCTION atelier_claim(text, text, double precision, text[], double precision);
CREATE FUNCTION atelier_claim(p_worker text, p_server text, p_vram double precision, p_known text[],
                              p_lease double precision, p_models text[] DEFAULT '{}',
                              p_affinity_seconds double precision DEFAULT 0)
RETURNS SETOF jobs LANGUAGE plpgsql SET enable_sort = off SET enable_bitmapscan = off AS $$
DECLARE
    v_id uuid;
    v_recovered boolean := true;
    v_head record;
    v_near uuid[];
BEGIN
    SELECT id INTO v_id FROM jobs
    WHERE status IN ('submitted', 'running') AND lease_expires_at < now()
      AND (server IS NULL OR server = p_server OR NOT (server = ANY(p_known)))
    ORDER BY lease_expires_at LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF v_id IS NULL THEN
        v_recovered := false;
        IF cardinality(p_models) > 0 AND p_affinity_seconds > 0 THEN
            SELECT priority, created_at INTO v_head FROM jobs
            WHERE status = 'queued' AND not_before <= now() AND vram_gb <= p_vram
            ORDER BY priority DESC, created_at LIMIT 1;
            IF FOUND AND v_head.created_at > now() - make_interval(secs => p_affinity_seconds) THEN
                SELECT array_agg(ahead.id ORDER BY ahead.created_at) INTO v_near FROM (
                    SELECT id, created_at, models FROM jobs
                    WHERE status = 'queued' AND not_before <= now() AND vram_gb <= p_vram
                      AND priority = v_head.priority
                    ORDER BY priority DESC, created_at LIMIT 100
                ) AS ahead
                WHERE ahead.models <> '{}' AND ahead.models <@ p_models;
                FOR i IN 1 .. coalesce(cardinality(v_near), 0) LOOP
                    SELECT id INTO v_id FROM jobs WHERE id = v_near[i] AND status = 'queued'
                    FOR UPDATE SKIP LOCKED;
                    EXIT WHEN v_id IS NOT NULL;
                END LOOP;
            END IF;
        END IF;
        IF v_id IS NULL THEN
            SELECT id INTO v_id FROM jobs
            WHERE status = 'queued' AND not_before <= now() AND vram_gb <= p_vram
            ORDER BY priority DESC, created_at LIMIT 1 FOR UPDATE SKIP LOCKED;
        END IF;
    END IF;
    IF v_id IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
    UPDATE jobs AS j SET
        status = CASE WHEN j.status = 'queued' THEN 'submitted' ELSE j.status END,
        server = CASE WHEN j.status = 'queued' THEN p_server ELSE coalesce(j.server, p_server) END,
        previous_server = j.server,
        recovered = v_recovered,
        attempts = j.attempts + 1,
        worker = p_worker,
        lease_expires_at = now() + make_interval(secs => p_lease),
        claimed_at = now(),
        updated_at = now()
    WHERE j.id = v_id
    RETURNING j.*;
END $$;
"""

# A rating given anywhere (chat, API, MCP) is stamped `rated_at`; the memory's owner copies it onto the image's
# points and records the stamp it copied in `memory_rated_at`, so a newer rating is copied again.
_RATING_SYNC = """
ALTER TABLE jobs ADD COLUMN rated_at timestamptz, ADD COLUMN memory_rated_at timestamptz;
CREATE INDEX jobs_ratings_to_sync ON jobs (rated_at)
    WHERE rated_at IS NOT NULL AND memory_indexed_at IS NOT NULL
      AND (memory_rated_at IS NULL OR memory_rated_at < rated_at);
"""

# The memory's indexer records what it could not do: a job it could index only without some image's pixels keeps
# the reason (and counts as indexed); a job it could not store is retried after `memory_index_retry_at` (back-off)
# and given up (`memory_index_skipped_at`) after the configured number of attempts. Jobs to index leave out the
# given-up ones; the ones waiting for a retry are filtered by time (few rows: the index keeps the set small).
_INDEX_FAULTS = """
ALTER TABLE jobs ADD COLUMN memory_index_error text,
    ADD COLUMN memory_index_attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN memory_index_failed_at timestamptz,
    ADD COLUMN memory_index_retry_at timestamptz,
    ADD COLUMN memory_index_skipped_at timestamptz;
DROP INDEX jobs_to_index;
CREATE INDEX jobs_to_index ON jobs (memory_index_attempts, finished_at)
    WHERE status = 'succeeded' AND memory_indexed_at IS NULL AND memory_index_skipped_at IS NULL;
"""

_ACCOUNTS = """
CREATE TABLE users (
    id                  text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    role                text NOT NULL DEFAULT 'user' CHECK (role IN ('admin', 'user')),
    display_name        text NOT NULL DEFAULT '',
    tier                text NOT NULL DEFAULT 'standard',
    priority            integer NOT NULL DEFAULT 0,
    images_per_day      integer CHECK (images_per_day >= 0),
    gpu_seconds_per_day double precision CHECK (gpu_seconds_per_day >= 0),
    budget_per_month    double precision CHECK (budget_per_month >= 0),
    max_concurrent      integer CHECK (max_concurrent >= 0),
    created_at          timestamptz NOT NULL DEFAULT now(),
    disabled_at         timestamptz
);
CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    user_id      text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         text NOT NULL DEFAULT '',
    prefix       text NOT NULL UNIQUE,
    hash         text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz,
    expires_at   timestamptz
);
CREATE INDEX api_keys_user ON api_keys (user_id);
-- Quotas count an owner's jobs of the current day and month.
CREATE INDEX jobs_owner_created ON jobs (owner, created_at);
-- Secrets every Atelier process shares: the JWT signing key when ATELIER_JWT_SECRET is not set.
CREATE TABLE atelier_secrets (
    name  text PRIMARY KEY,
    value text NOT NULL
);
INSERT INTO atelier_secrets (name, value)
VALUES ('jwt', replace(gen_random_uuid()::text || gen_random_uuid()::text || gen_random_uuid()::text, '-', ''));
"""

# The memory's tables need the `vector` extension (pgvector), which the embedded server ships and a DATABASE_URL
# server may lack. The migration defines `atelier_memory_schema()` and calls it: it creates the extension and the
# tables when it can and returns false when it cannot (no pgvector installed, or no right to create it), so the
# ledger works on any PostgreSQL; the memory calls it again on open (pgvector installed later) and explains a false.
# Vectors have no fixed dimension here (the embedding model decides): tools/memory/pgvector_store.py builds one HNSW
# expression index per dimension, `(embedding::vector(N))`, partial on `indexed`: rows arrive with indexed = false
# (stored and searched exactly at once, no index work on the write) and are folded into the index in the background.
_MEMORY_TABLES = """
CREATE FUNCTION atelier_memory_schema() RETURNS boolean LANGUAGE plpgsql AS $fn$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector') THEN
        IF NOT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector') THEN
            RETURN false;
        END IF;
        BEGIN
            CREATE EXTENSION IF NOT EXISTS vector;
        EXCEPTION WHEN OTHERS THEN  -- no right to create it, or a broken install: the memory says which on open
            RETURN false;
        END;
    END IF;
    CREATE TABLE IF NOT EXISTS memory_collections (
        name       text PRIMARY KEY,
        model      text NOT NULL,
        dim        integer NOT NULL CHECK (dim > 0),
        updated_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE IF NOT EXISTS memory_documents (
        id        uuid PRIMARY KEY,
        owner     text NOT NULL,
        source    text NOT NULL DEFAULT '',
        content   text NOT NULL,
        metadata  jsonb NOT NULL,
        embedding vector NOT NULL,
        indexed   boolean NOT NULL DEFAULT false
    );
    CREATE INDEX IF NOT EXISTS memory_documents_by_source ON memory_documents (owner, source);
    CREATE INDEX IF NOT EXISTS memory_documents_fresh ON memory_documents (owner) WHERE NOT indexed;
    CREATE TABLE IF NOT EXISTS memory_images (
        id        uuid PRIMARY KEY,
        owner     text NOT NULL,
        workflow  text NOT NULL DEFAULT '',
        rating    smallint,
        content   text NOT NULL,
        metadata  jsonb NOT NULL,
        embedding vector NOT NULL,
        pixels    vector(192) NOT NULL,
        indexed   boolean NOT NULL DEFAULT false
    );
    CREATE INDEX IF NOT EXISTS memory_images_by_owner ON memory_images (owner, workflow, rating);
    CREATE INDEX IF NOT EXISTS memory_images_fresh ON memory_images (owner) WHERE NOT indexed;
    RETURN true;
END $fn$;
SELECT atelier_memory_schema();
"""

# A product showcase (graphs/showcase.py): the brief, its images (one item per planned shot, with its job), the
# captions and copy, and the gallery made of them (page, manifest and zip in the output store). One row per turn of
# a showcase thread and owner, so a run resumed after a restart finds its row again instead of making a second.
# The owner is always the authenticated caller; readers filter on it (another owner's showcase is not found).
_SHOWCASES = """
CREATE TABLE showcases (
    id          uuid PRIMARY KEY,
    owner       text NOT NULL,
    thread      text NOT NULL,
    turn        text NOT NULL,
    brief       text NOT NULL,
    photo       text,
    status      text NOT NULL DEFAULT 'rendering'
                CHECK (status IN ('rendering', 'captioning', 'building', 'ready', 'partial', 'failed')),
    progress    jsonb NOT NULL DEFAULT '{}'::jsonb,
    items       jsonb NOT NULL DEFAULT '[]'::jsonb,
    manifest    jsonb,
    page_uri    text,
    zip_uri     text,
    headline    text NOT NULL DEFAULT '',
    note        text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    UNIQUE (owner, thread, turn)
);
CREATE INDEX showcases_by_owner ON showcases (owner, created_at DESC);
"""


MIGRATIONS: list[Migration] = [
    Migration(1, "jobs, workers and their notifications", _JOBS),
    Migration(2, "ratings, tags and memory indexing of jobs", _MEMORY),
    Migration(3, "job progress events and chat threads", _EVENTS),
    Migration(4, "measured workflow times per server", _TIMINGS),
    Migration(5, "prompt library, A/B tests and prompt uses", _PROMPTS),
    Migration(6, "job models and claim affinity for VRAM hot-swap", _AFFINITY),
    Migration(7, "users, API keys, quotas and the shared JWT secret", _ACCOUNTS),
    Migration(8, "ratings waiting to reach the memory", _RATING_SYNC),
    Migration(9, "the memory's documents and images (pgvector, when the server has it)", _MEMORY_TABLES),
    Migration(10, "memory indexing faults: reasons, retries with back-off, skipped jobs", _INDEX_FAULTS),
    Migration(11, "product showcases: brief, images, captions and the gallery made of them", _SHOWCASES),
]


def _ensure_table(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Create the bookkeeping table (idempotent, safe under concurrency thanks to the advisory lock)."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS atelier_migrations ("
        " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
    )


def applied_versions(conn: psycopg.Connection[tuple[object, ...]]) -> list[int]:
    """The migration versions recorded in this database (empty when none)."""
    exists = conn.execute("SELECT to_regclass('atelier_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return []
    return [int(str(row[0])) for row in conn.execute("SELECT version FROM atelier_migrations ORDER BY version")]


def apply_migrations(conninfo: str, migrations: list[Migration] | None = None) -> list[int]:
    """Bring the schema up to date; return the versions this call applied (none when already current)."""
    steps = sorted(migrations if migrations is not None else MIGRATIONS, key=lambda m: m.version)
    applied: list[int] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for step in steps:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                _ensure_table(conn)
                done = conn.execute("SELECT 1 FROM atelier_migrations WHERE version = %s", (step.version,))
                if done.fetchone():
                    continue
                conn.execute(step.sql.encode())
                conn.execute(
                    "INSERT INTO atelier_migrations (version, name) VALUES (%s, %s)", (step.version, step.name)
                )
                applied.append(step.version)
    return applied
