"""Lease heartbeats from their own thread and connection, so a long GPU job never starves them."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable

import psycopg

__all__ = ["Heartbeat", "HeldJobs"]

log = logging.getLogger(__name__)


class HeldJobs:
    """The (job id, attempt) pairs a worker currently holds; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[uuid.UUID, int] = {}

    def add(self, job_id: uuid.UUID, attempt: int) -> None:
        """Start holding a job."""
        with self._lock:
            self._held[job_id] = attempt

    def discard(self, job_id: uuid.UUID) -> None:
        """Stop holding a job."""
        with self._lock:
            self._held.pop(job_id, None)

    def snapshot(self) -> dict[uuid.UUID, int]:
        """A copy of what is held now."""
        with self._lock:
            return dict(self._held)

    def __contains__(self, job_id: object) -> bool:
        """Whether this job is held."""
        with self._lock:
            return job_id in self._held


class Heartbeat(threading.Thread):
    """Every lease/3 seconds, extend the leases of held jobs (fenced by attempt) and mark the worker alive.

    With `live_slots`, it reports only what live job loops do: while none runs (all died and wait for their
    restart) it extends no lease and leaves `last_seen` alone, so the worker does not look alive with nothing
    working. A slot's jobs leave `held` as the slot ends (dies or not), so their leases lapse for a takeover.
    """

    def __init__(
        self,
        conninfo: str,
        worker_id: str,
        held: HeldJobs,
        lease_seconds: float,
        on_beat: Callable[[int], None] | None = None,
        live_slots: Callable[[], int] | None = None,
    ) -> None:
        super().__init__(name=f"heartbeat-{worker_id}", daemon=True)
        self.conninfo = conninfo
        self.worker_id = worker_id
        self.held = held
        self.lease_seconds = lease_seconds
        self.on_beat = on_beat
        self.live_slots = live_slots
        self.skipped = 0
        self._stop_event = threading.Event()
        self.beats = 0

    def stop(self) -> None:
        """Ask the thread to end and wait for it."""
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout=5)

    def beat(self, conn: psycopg.Connection[tuple[object, ...]]) -> int:
        """Extend held leases once; return how many were extended (none, and no sign of life, without a live slot)."""
        if self.live_slots is not None and self.live_slots() <= 0:
            self.skipped += 1
            log.warning("heartbeat of %s: no job loop is running; not reporting the worker alive", self.worker_id)
            return 0
        held = self.held.snapshot()
        extended = 0
        with conn.transaction():
            if held:
                cur = conn.execute(
                    "UPDATE jobs SET lease_expires_at = now() + make_interval(secs => %s) "
                    "FROM unnest(%s::uuid[], %s::int[]) AS h(id, attempt) "
                    "WHERE jobs.id = h.id AND jobs.attempts = h.attempt AND jobs.worker = %s "
                    "AND jobs.status IN ('submitted', 'running')",
                    (self.lease_seconds, list(held), list(held.values()), self.worker_id),
                )
                extended = cur.rowcount
            conn.execute("UPDATE workers SET last_seen = now() WHERE id = %s", (self.worker_id,))
        self.beats += 1
        if self.on_beat is not None:
            self.on_beat(extended)
        return extended

    def run(self) -> None:
        """Beat until stopped; reconnect after a database error (leases may lapse meanwhile: fencing covers it)."""
        interval = self.lease_seconds / 3
        conn: psycopg.Connection[tuple[object, ...]] | None = None
        while not self._stop_event.is_set():
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5)
                self.beat(conn)
            except psycopg.Error as exc:
                log.warning("heartbeat of %s failed: %s", self.worker_id, exc)
                if conn is not None:
                    conn.close()
                conn = None
            self._stop_event.wait(interval)
        if conn is not None:
            conn.close()
