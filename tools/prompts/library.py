"""The versioned prompt library in PostgreSQL: save (every change a new version), read, stats, best for a purpose.

Versions are numbered under a row lock on the prompt, so concurrent saves get consecutive numbers with no
gaps or duplicates, and saving the newest template again creates nothing. Usage and ratings are not copied:
`prompt_uses` links each job to the version that made it, and the job row keeps its stars and thumb.

A prompt belongs to its author (whoever created it): only they or an admin save versions of it or change its
details, under the same row lock; anyone else forks it (`fork`: a new prompt of their own from its newest version).
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from atelier.tools.errors import AtelierError
from atelier.tools.prompts.models import (
    ChosenPrompt,
    Prompt,
    PromptDraft,
    PromptVersion,
    SaveResult,
    VersionStats,
    check_name,
)

__all__ = ["LIKED_SQL", "NotTheAuthorError", "PromptLibrary", "PromptNameTakenError", "PromptNotFoundError",
           "not_yours"]

# Liked: ★4–★5, or a thumb up when there are no stars; NULL (not in the sample) when neither was given.
# Uses count every job a version made; only finished images can be rated, so only they are in the sample.
LIKED_SQL = "CASE WHEN j.rating IS NOT NULL THEN j.rating >= 4 WHEN j.thumb IS NOT NULL THEN j.thumb = 1 END"
_STATS = f"""
SELECT v.prompt, v.version, count(j.id) AS uses, count({LIKED_SQL}) AS rated,
       count(*) FILTER (WHERE {LIKED_SQL}) AS liked, avg(j.rating)::float AS mean_stars
FROM prompt_versions v
LEFT JOIN prompt_uses u ON u.prompt = v.prompt AND u.version = v.version
LEFT JOIN jobs j ON j.id = u.job_id
WHERE {{where}}
GROUP BY v.prompt, v.version ORDER BY v.prompt, v.version
"""

Pool = AsyncConnectionPool[psycopg.AsyncConnection[DictRow]]
# Whose prompts and A/B tests may shape an owner's images: their own, an admin account's, or an author who is no
# account at all (the local admin, the CLI's operator). Another user's never do (issue 15: shared things).
TRUSTED_AUTHOR = "(author = %(owner)s OR author NOT IN (SELECT id FROM users WHERE role <> 'admin'))"


class PromptNotFoundError(AtelierError):
    """A prompt or version that is not in the library."""


class NotTheAuthorError(AtelierError):
    """A change to a prompt or an A/B test by someone who is neither its author nor an admin (the job API's 403)."""


class PromptNameTakenError(AtelierError):
    """A fork under a name the library already has (the job API's 409)."""


def not_yours(what: str, name: str, author: str, caller: str, fix: str) -> NotTheAuthorError:
    """The refusal of `caller` changing `author`'s `what`, saying what to do instead."""
    return NotTheAuthorError(f"{what} '{name}' belongs to {author}; only {author} or an admin may change it, and you "
                             f"are {caller}. {fix}")


def _stats(row: dict[str, Any]) -> VersionStats:
    """A stats row with its score: the posterior mean like-rate under a uniform prior (0.5 when unrated)."""
    rated, liked = int(row["rated"]), int(row["liked"])
    return VersionStats(prompt=row["prompt"], version=row["version"], uses=int(row["uses"]), rated=rated,
                        liked=liked, mean_stars=row["mean_stars"], score=(liked + 1) / (rated + 2))


class PromptLibrary:
    """Prompts, their versions and how each version did, over the ledger's connection pool."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def save(self, draft: PromptDraft, author: str, *, admin: bool = False) -> SaveResult:
        """Create the prompt or add a version when the template, negative or defaults changed; update metadata.

        A draft without a negative prompt or defaults keeps the newest version's. An existing prompt changes only
        by its author or an `admin` (NotTheAuthorError naming the fork otherwise).
        """
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO prompts (name, category, purpose, tags, description, author) "
                "VALUES (%s, coalesce(%s, 'general'), %s, coalesce(%s::text[], '{}'), coalesce(%s, ''), %s) "
                "ON CONFLICT (name) DO NOTHING",
                (draft.name, draft.category, draft.purpose, draft.tags, draft.description, author))
            cur = await conn.execute("SELECT * FROM prompts WHERE name = %s FOR UPDATE", (draft.name,))
            prompt = await cur.fetchone()
            assert prompt is not None
            if prompt["author"] != author and not admin:
                fork = f"{draft.name}-{author}"[:64]
                raise not_yours("prompt", draft.name, prompt["author"], author,
                                f"Fork it and change your copy: POST /prompts/{draft.name}/fork with "
                                f'{{"name": "{fork}"}}, or `atelier prompts fork {draft.name} {fork}`.')
            newest = await self._version_row(conn, draft.name, int(prompt["latest"])) if prompt["latest"] else None
            negative = draft.negative if draft.negative is not None else newest["negative"] if newest else ""
            defaults = draft.defaults if draft.defaults is not None else newest["defaults"] if newest else {}
            same = newest is not None and (newest["template"], newest["negative"], newest["defaults"]) == (
                draft.template, negative, defaults)
            if not same:
                cur = await conn.execute(
                    "INSERT INTO prompt_versions (prompt, version, template, negative, defaults, note, author) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING *",
                    (draft.name, int(prompt["latest"]) + 1, draft.template, negative, Jsonb(defaults), draft.note,
                     author))
                newest = await cur.fetchone()
            assert newest is not None
            cur = await conn.execute(
                "UPDATE prompts SET latest = %s, category = coalesce(%s, category), purpose = coalesce(%s, purpose), "
                "tags = coalesce(%s::text[], tags), description = coalesce(%s, description), updated_at = now() "
                "WHERE name = %s RETURNING *",
                (newest["version"], draft.category, draft.purpose, draft.tags, draft.description, draft.name))
            updated = await cur.fetchone()
        assert updated is not None
        return SaveResult(prompt=Prompt.model_validate(updated), version=PromptVersion.model_validate(newest),
                          created=not same)

    async def fork(self, source: str, name: str, author: str, *, note: str = "") -> SaveResult:
        """A new prompt `name` by `author` whose version 1 is `source`'s newest version.

        Its category, tags and description are copied; its purpose is not (the designer would start choosing the
        copy for everyone's images of that purpose at once): give it one with a save when it is ready.
        """
        try:
            check_name(name)
        except ValueError as exc:
            raise AtelierError(str(exc)) from exc
        origin, newest = await self.get(source), await self.version(source)
        async with self.pool.connection() as conn, conn.transaction():
            try:
                cur = await conn.execute(
                    "INSERT INTO prompts (name, category, tags, description, latest, author) "
                    "VALUES (%s, %s, %s, %s, 1, %s) RETURNING *",
                    (name, origin.category, origin.tags, origin.description, author))
            except psycopg.errors.UniqueViolation as exc:
                raise PromptNameTakenError(f"a prompt named '{name}' exists; fork '{source}' under another "
                                           "name") from exc
            prompt = await cur.fetchone()
            cur = await conn.execute(
                "INSERT INTO prompt_versions (prompt, version, template, negative, defaults, note, author) "
                "VALUES (%s, 1, %s, %s, %s, %s, %s) RETURNING *",
                (name, newest.template, newest.negative, Jsonb(newest.defaults),
                 note or f"forked from {newest.ref}", author))
            version = await cur.fetchone()
        assert prompt is not None and version is not None
        return SaveResult(prompt=Prompt.model_validate(prompt), version=PromptVersion.model_validate(version),
                          created=True)

    @staticmethod
    async def _version_row(conn: psycopg.AsyncConnection[DictRow], name: str, version: int) -> DictRow | None:
        """One version's row."""
        cur = await conn.execute("SELECT * FROM prompt_versions WHERE prompt = %s AND version = %s", (name, version))
        return await cur.fetchone()

    async def get(self, name: str) -> Prompt:
        """A prompt by name."""
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT * FROM prompts WHERE name = %s", (name,))
            row = await cur.fetchone()
        if row is None:
            raise PromptNotFoundError(f"no prompt named '{name}'; `atelier prompts list` shows the library")
        return Prompt.model_validate(row)

    async def version(self, name: str, version: int | None = None) -> PromptVersion:
        """A prompt's version (the newest when `version` is None)."""
        prompt = await self.get(name)
        number = version or prompt.latest
        async with self.pool.connection() as conn:
            row = await self._version_row(conn, name, number)
        if row is None:
            raise PromptNotFoundError(f"prompt '{name}' has no version {number}; it has versions 1–{prompt.latest}")
        return PromptVersion.model_validate(row)

    async def history(self, name: str) -> list[PromptVersion]:
        """Every version of a prompt, oldest first."""
        await self.get(name)
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT * FROM prompt_versions WHERE prompt = %s ORDER BY version", (name,))
            return [PromptVersion.model_validate(row) for row in await cur.fetchall()]

    async def search(self, *, category: str | None = None, purpose: str | None = None, tag: str | None = None,
                     query: str | None = None, author: str | None = None) -> list[Prompt]:
        """The library, filtered by category, purpose, tag, a word in the name or description, and/or author."""
        text = None if query is None else "%" + query.replace("%", r"\%").replace("_", r"\_") + "%"
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT * FROM prompts WHERE (%(c)s::text IS NULL OR category = %(c)s) "
                "AND (%(p)s::text IS NULL OR purpose = %(p)s) AND (%(t)s::text IS NULL OR %(t)s = ANY(tags)) "
                "AND (%(q)s::text IS NULL OR name ILIKE %(q)s OR description ILIKE %(q)s) "
                "AND (%(a)s::text IS NULL OR author = %(a)s) ORDER BY category, name",
                {"c": category, "p": purpose, "t": tag.lower() if tag else None, "q": text, "a": author})
            return [Prompt.model_validate(row) for row in await cur.fetchall()]

    async def stats(self, name: str) -> list[VersionStats]:
        """Each version's uses, ratings and score."""
        await self.get(name)
        async with self.pool.connection() as conn:
            cur = await conn.execute(_STATS.format(where="v.prompt = %s").encode(), (name,))
            return [_stats(row) for row in await cur.fetchall()]

    async def best_for(self, purpose: str, *,
                       for_owner: str | None = None) -> tuple[PromptVersion, VersionStats] | None:
        """The best-rated version among the prompts for `purpose` (ties: more ratings, then newer); None if none.

        The score is the posterior mean like-rate (liked + 1) / (rated + 2): an untried version scores 0.5, so it
        ranks above poorly rated versions and below well-rated ones. With `for_owner`, only prompts that may shape
        that person's images take part: their own, an admin's, or an operator's (TRUSTED_AUTHOR).
        """
        where = "v.prompt IN (SELECT name FROM prompts WHERE purpose = %(purpose)s"
        where += f" AND {TRUSTED_AUTHOR})" if for_owner is not None else ")"
        async with self.pool.connection() as conn:
            cur = await conn.execute(_STATS.format(where=where).encode(),
                                     {"purpose": purpose.strip().lower(), "owner": for_owner})
            rows = [_stats(row) for row in await cur.fetchall()]
        if not rows:
            return None
        best = max(rows, key=lambda s: (s.score, s.rated, s.version))
        return await self.version(best.prompt, best.version), best

    async def record_use(self, job_id: str | uuid.UUID, chosen: ChosenPrompt, request_key: str | None = None) -> None:
        """Link a job to the prompt version and A/B arm that made it (once: a repeat is ignored)."""
        if chosen.version is None and chosen.ab_test is None:
            return
        version = chosen.version
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO prompt_uses (job_id, prompt, version, ab_test, variant, request_key) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (job_id) DO NOTHING",
                (str(job_id), version.prompt if version else None, version.version if version else None,
                 chosen.ab_test, chosen.variant, request_key))
