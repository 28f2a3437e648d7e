"""The `showcases` table (migration 11): start a showcase once per turn, record its progress, finish it, read it.

Every read names the owner it acts for (the authenticated caller): another owner's showcase is not found, in the
same words as an unknown id. `start` is idempotent on (owner, thread, turn), so a showcase run resumed after a
restart finds its row again.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from atelier.tools.ledger.models import Job
from atelier.tools.showcase.models import Showcase, ShowcaseItem, ShowcaseNotFoundError, ShowcaseProgress

if TYPE_CHECKING:
    from atelier.tools.ledger.service import LedgerService

__all__ = ["ShowcaseStore", "storable"]

Pool = AsyncConnectionPool[psycopg.AsyncConnection[DictRow]]


def storable(value: Any) -> Any:
    """`value` with every string fit for PostgreSQL text and jsonb: NUL characters dropped, lone surrogates (not
    UTF-8) replaced. Briefs, captions and copy come from people and models; none of them may fail a write."""
    if isinstance(value, str):
        return value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {storable(key): storable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [storable(item) for item in value]
    return value


def _items(items: Sequence[ShowcaseItem]) -> Jsonb:
    """Items as the jsonb column stores them."""
    return Jsonb(storable([item.model_dump(mode="json") for item in items]))


class ShowcaseStore:
    """Showcases over the ledger's connection pool."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    @classmethod
    def for_service(cls, service: LedgerService) -> ShowcaseStore:
        """The showcases kept in a LedgerService's database."""
        return cls(service.ledger.pool)

    async def start(self, *, owner: str, thread: str, turn: str, brief: str, items: Sequence[ShowcaseItem],
                    photo: str | None = None) -> Showcase:
        """The showcase of this turn: created with `items` the first time, as it stands on every later call."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO showcases (id, owner, thread, turn, brief, photo, items, progress) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (owner, thread, turn) DO UPDATE SET updated_at = now() RETURNING *",
                (uuid.uuid4(), owner, thread, turn, storable(brief), storable(photo), _items(items),
                 Jsonb(ShowcaseProgress(stage="images", done=0, total=len(items)).model_dump())))
            row = await cur.fetchone()
        assert row is not None  # INSERT … ON CONFLICT DO UPDATE … RETURNING always returns the row
        return Showcase.model_validate(row)

    async def record(self, showcase_id: uuid.UUID, *, status: str, progress: ShowcaseProgress,
                     items: Sequence[ShowcaseItem] | None = None, headline: str | None = None,
                     note: str | None = None) -> Showcase:
        """Store how far the showcase is (and its items, headline and note, when given)."""
        sets = ["status = %(status)s", "progress = %(progress)s", "updated_at = now()"]
        values: dict[str, Any] = {"id": showcase_id, "status": status,
                                  "progress": Jsonb(storable(progress.model_dump()))}
        if items is not None:
            sets.append("items = %(items)s")
            values["items"] = _items(items)
        if headline is not None:
            sets.append("headline = %(headline)s")
            values["headline"] = storable(headline)
        if note is not None:
            sets.append("note = %(note)s")
            values["note"] = storable(note)
        return await self._update(", ".join(sets), values)

    async def finish(self, showcase_id: uuid.UUID, *, status: str, items: Sequence[ShowcaseItem],
                     manifest: dict[str, Any], page_uri: str, zip_uri: str, note: str) -> Showcase:
        """Record the finished gallery (ready, partial or failed) and where its page and zip are stored."""
        progress = ShowcaseProgress(stage="done", done=1, total=1, message="the gallery is made")
        return await self._update(
            "status = %(status)s, progress = %(progress)s, items = %(items)s, manifest = %(manifest)s, "
            "page_uri = %(page)s, zip_uri = %(zip)s, note = %(note)s, updated_at = now(), "
            "finished_at = coalesce(finished_at, now())",
            {"id": showcase_id, "status": status, "progress": Jsonb(progress.model_dump()), "items": _items(items),
             "manifest": Jsonb(storable(manifest)), "page": page_uri, "zip": zip_uri, "note": storable(note)})

    async def _update(self, sets: str, values: dict[str, Any]) -> Showcase:
        """Run one UPDATE of a showcase by id and return the row."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(f"UPDATE showcases SET {sets} WHERE id = %(id)s RETURNING *".encode(), values)
            row = await cur.fetchone()
        if row is None:
            raise ShowcaseNotFoundError(f"no showcase {values['id']}")
        return Showcase.model_validate(row)

    async def get(self, showcase_id: str | uuid.UUID, *, owner: str | None) -> Showcase:
        """One showcase; `owner`: whose it must be (None: anyone's, for an admin). ShowcaseNotFoundError otherwise."""
        refusal = ShowcaseNotFoundError(f"no showcase {str(showcase_id)[:40]!r} of yours; list yours with "
                                        "GET /showcases (or the chat's Gallery tab)")
        try:
            wanted = uuid.UUID(str(showcase_id))
        except ValueError:
            raise refusal from None
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT * FROM showcases WHERE id = %s AND (%s::text IS NULL OR owner = %s)", (wanted, owner, owner))
            row = await cur.fetchone()
        if row is None:
            raise refusal
        return Showcase.model_validate(row)

    async def recent(self, owner: str, limit: int = 50) -> list[Showcase]:
        """The owner's showcases, newest first."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT * FROM showcases WHERE owner = %s ORDER BY created_at DESC, id LIMIT %s", (owner, limit))
            return [Showcase.model_validate(row) for row in await cur.fetchall()]

    async def jobs_by_key(self, owner: str, keys: Sequence[str]) -> dict[str, Job]:
        """The owner's jobs queued under these idempotency keys, by key (a key without a job is left out)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT * FROM jobs WHERE idempotency_key = ANY(%s) AND owner = %s",
                                     (list(keys), owner))
            rows = await cur.fetchall()
        return {str(row["idempotency_key"]): Job.model_validate(row) for row in rows}
