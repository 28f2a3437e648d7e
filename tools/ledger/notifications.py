"""One LISTEN connection per ledger, fanned out to every waiter: event sockets, MCP and chat follows, `--wait`.

PostgreSQL wakes waiters through NOTIFY (tools/ledger/migrations.py): `atelier_events` carries a job id for each
new event row, `atelier_status` "<job id> <status>" when a job ends. Instead of one connection per waiter, the
`NotificationHub` of a ledger owns a single autocommit connection LISTENing on those channels and wakes the
subscriptions that asked about the notified job. A wake is a flag, not a queue: a waiter re-reads everything after
its own cursor when woken, so any number of notifications fold into one re-read and nothing piles up behind a slow
reader. When the connection drops, the hub reconnects and wakes every subscription once it LISTENs again (a
notification sent meanwhile is lost, the re-read finds what it announced); the first LISTEN wakes them the same way,
so a subscriber never waits for the hub to connect before its first read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import psycopg

from atelier.tools.errors import AtelierError

__all__ = ["EVENTS", "STATUS", "NotificationHub", "NotificationsClosedError", "Subscription"]

log = logging.getLogger(__name__)

# The channels the ledger's triggers notify (migrations.py): a new event row, a job that ended.
EVENTS = "atelier_events"
STATUS = "atelier_status"


class NotificationsClosedError(AtelierError):
    """The ledger closed while someone was still waiting for its jobs."""


class Subscription:
    """What one waiter asked to be woken about: some jobs on some channels. Use it from `NotificationHub.subscribe`."""

    def __init__(self, hub: NotificationHub, keys: frozenset[tuple[str, str]]) -> None:
        self.hub = hub
        self.keys = keys
        self._woken = asyncio.Event()

    def wake(self) -> None:
        """Note that something happened (or may have: a reconnect) since the waiter last looked."""
        self._woken.set()

    async def wait(self, timeout: float | None) -> bool:
        """Sleep until woken (True) or `timeout` seconds pass (False); each wake is consumed by one wait.

        Read first, then wait: a notification that arrived during the read has already set the flag, so the
        wait returns at once and the waiter reads again. NotificationsClosedError once the ledger closed.
        """
        if self.hub.closed:
            raise NotificationsClosedError("the job ledger was closed while waiting for jobs")
        try:
            await asyncio.wait_for(self._woken.wait(), timeout)
        except TimeoutError:
            return False
        self._woken.clear()
        if self.hub.closed:
            raise NotificationsClosedError("the job ledger was closed while waiting for jobs")
        return True


class NotificationHub:
    """A ledger's single LISTEN connection, started on first use, and the subscriptions it wakes."""

    def __init__(self, conninfo: str, *, channels: Iterable[str] = (EVENTS, STATUS), ping_seconds: float = 30.0,
                 max_backoff_seconds: float = 5.0) -> None:
        self.conninfo = conninfo
        self.channels = tuple(channels)
        self.ping_seconds = ping_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.closed = False
        self.connects = 0
        self.backend_pid: int | None = None
        self._subscribers: dict[tuple[str, str], set[Subscription]] = {}
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()

    @property
    def subscriptions(self) -> int:
        """How many subscriptions are open (each counted once)."""
        return len({sub for subs in self._subscribers.values() for sub in subs})

    async def listening(self) -> None:
        """Wait until the hub LISTENs (starting it if needed); for tests and readiness checks."""
        self._start()
        await self._listening.wait()

    @contextmanager
    def subscribe(self, job_ids: Iterable[str | uuid.UUID], channels: Iterable[str] | None = None
                  ) -> Iterator[Subscription]:
        """Be woken about these jobs on these channels (default: all of the hub's) until the block ends."""
        if self.closed:
            raise NotificationsClosedError("the job ledger is closed")
        wanted = tuple(channels) if channels is not None else self.channels
        unknown = set(wanted) - set(self.channels)
        if unknown:
            raise ValueError(f"this hub does not LISTEN on {sorted(unknown)}; it listens on {list(self.channels)}")
        keys = frozenset((channel, str(uuid.UUID(str(job)))) for channel in wanted for job in job_ids)
        sub = Subscription(self, keys)
        for key in keys:
            self._subscribers.setdefault(key, set()).add(sub)
        self._start()
        try:
            yield sub
        finally:
            for key in keys:
                subs = self._subscribers.get(key)
                if subs is not None:
                    subs.discard(sub)
                    if not subs:
                        del self._subscribers[key]

    def _start(self) -> None:
        """Run the listener task if it does not run yet."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="atelier-notifications")

    def _wake_all(self) -> None:
        """Wake every subscription (after a (re)connect, or at close)."""
        for subs in self._subscribers.values():
            for sub in subs:
                sub.wake()

    def _dispatch(self, channel: str, payload: str) -> None:
        """Wake the subscriptions of the job a notification names (its payload's first word)."""
        job = payload.split(" ", 1)[0]
        for sub in self._subscribers.get((channel, job), ()):
            sub.wake()

    async def _run(self) -> None:
        """Connect, LISTEN, dispatch; reconnect with a growing pause after any connection error."""
        backoff = 0.1
        while not self.closed:
            try:
                async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as conn:
                    for channel in self.channels:
                        await conn.execute(f"LISTEN {channel}".encode())
                    self.connects += 1
                    self.backend_pid = conn.info.backend_pid
                    self._listening.set()
                    self._wake_all()  # whatever happened before this LISTEN: every waiter reads again
                    backoff = 0.1
                    await self._listen(conn)
            except Exception as exc:  # psycopg.Error or OSError mostly; whatever it was, listen again
                self._listening.clear()
                self.backend_pid = None
                if self.closed:
                    return
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                log.warning("job notifications: LISTEN connection lost (%s); reconnecting in %.1f s", reason, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_seconds)

    async def _listen(self, conn: psycopg.AsyncConnection[object]) -> None:
        """Dispatch notifications as they come; check the connection after `ping_seconds` of silence."""
        while not self.closed:
            async with contextlib.aclosing(conn.notifies(timeout=self.ping_seconds)) as notes:
                async for note in notes:
                    self._dispatch(note.channel, note.payload)
            await conn.execute("SELECT 1")  # a connection that died silently raises here

    async def close(self) -> None:
        """Stop listening, close the connection, and end every wait with NotificationsClosedError."""
        self.closed = True
        self._listening.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._wake_all()
