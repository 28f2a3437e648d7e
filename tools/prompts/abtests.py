"""A/B tests over prompt versions and workflows: create, assign a variant per request, report, stop.

Assignment is a pure function of the test's name, its variants and the request's key (a SHA-256 bucket over
the weights): the same request always gets the same variant, in any process, with no shared counter to race
on. What each job got is recorded in `prompt_uses`; the report joins the jobs' ratings.

A test belongs to its author: only they or an admin stop it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import psycopg
from psycopg.rows import DictRow

from atelier.tools.catalog import list_templates
from atelier.tools.errors import AtelierError
from atelier.tools.prompts.library import LIKED_SQL, TRUSTED_AUTHOR, Pool, PromptNotFoundError, not_yours
from atelier.tools.prompts.models import ABReport, ABTest, Variant, VariantReport, VariantSpec, check_name
from atelier.tools.prompts.significance import THRESHOLD, Outcome, decide

__all__ = ["METHOD", "ABTestError", "ABTestNotFoundError", "ABTests", "assign_variant"]

METHOD = (f"Bayesian beta-binomial: liked = ★4–5 or thumb up; uniform Beta(1,1) prior per variant; significant when "
          f"one variant's P(best) ≥ {THRESHOLD:g} and every variant has the minimum ratings. Pearson's chi-square "
          "(no continuity correction) shown for reference.")
_REPORT = f"""
SELECT u.variant, count(j.id) AS uses, count({LIKED_SQL}) AS rated,
       count(*) FILTER (WHERE {LIKED_SQL}) AS liked, avg(j.rating)::float AS mean_stars
FROM prompt_uses u JOIN jobs j ON j.id = u.job_id
WHERE u.ab_test = %s GROUP BY u.variant
"""


class ABTestError(AtelierError):
    """An A/B test that cannot be created or used as asked."""


class ABTestNotFoundError(ABTestError):
    """No A/B test by that name."""


def assign_variant(test: str, variants: Sequence[Variant], request_key: str) -> Variant:
    """The variant for one request: a SHA-256 bucket of (test, key) over the variants' weights, in order."""
    if not variants:
        raise ABTestError(f"A/B test '{test}' has no variants")
    ordered = sorted(variants, key=lambda v: v.position)
    digest = hashlib.sha256(f"{test}\x00{request_key}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") % sum(v.weight for v in ordered)
    for variant in ordered:
        if bucket < variant.weight:
            return variant
        bucket -= variant.weight
    raise AssertionError("unreachable: the bucket is below the total weight")


class ABTests:
    """The `ab_tests` and `ab_variants` tables, assignment and reports."""

    def __init__(self, pool: Pool, workflow_dirs: Sequence[Path] = ()) -> None:
        self.pool = pool
        self.workflow_dirs = list(workflow_dirs)

    async def create(self, name: str, variants: Sequence[VariantSpec], author: str, *, purpose: str | None = None,
                     min_ratings: int = 20, description: str = "") -> ABTest:
        """A running test; each variant's prompt version and workflow must exist."""
        try:
            check_name(name, "A/B test")
        except ValueError as exc:
            raise ABTestError(str(exc)) from exc
        self._check_variants(variants)
        if min_ratings < 1:
            raise ABTestError("min_ratings must be at least 1 (20 or more gives a meaningful comparison)")
        key = purpose.strip().lower() if purpose else None
        async with self.pool.connection() as conn, conn.transaction():
            try:
                await conn.execute(
                    "INSERT INTO ab_tests (name, purpose, min_ratings, description, author) "
                    "VALUES (%s, %s, %s, %s, %s)",
                    (name, key, min_ratings, description, author))
            except psycopg.errors.UniqueViolation as exc:
                raise ABTestError(self._duplicate(name, key, exc)) from exc
            for position, spec in enumerate(variants):
                try:
                    await conn.execute(
                        "INSERT INTO ab_variants (test, label, position, prompt, version, workflow, weight) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                        (name, spec.label, position, spec.prompt, spec.version, spec.workflow, spec.weight))
                except psycopg.errors.ForeignKeyViolation as exc:
                    raise PromptNotFoundError(f"variant {spec.label}: prompt {spec.prompt}@{spec.version} is not in "
                                              "the library; `atelier prompts history NAME` lists versions") from exc
        return await self.get(name)

    @staticmethod
    def _duplicate(name: str, purpose: str | None, exc: psycopg.errors.UniqueViolation) -> str:
        """The message for a name or a running purpose already taken."""
        if "ab_tests_running_purpose" in str(exc):
            return (f"another A/B test is already running for purpose '{purpose}'; stop it first "
                    "(`atelier ab stop NAME`) or create this one without --purpose")
        return f"an A/B test named '{name}' exists; pick another name (tests keep their data once stopped)"

    def _check_variants(self, variants: Sequence[VariantSpec]) -> None:
        """At least two variants, distinct labels, each naming a prompt version or a workflow (shipped or in the
        user's folders)."""
        if len(variants) < 2:
            raise ABTestError("an A/B test needs at least two variants, e.g. --variant A=hero@1 --variant B=hero@2")
        labels = [v.label for v in variants]
        if len(set(labels)) != len(labels):
            raise ABTestError(f"variant labels must differ; got {', '.join(labels)}")
        known = {t.name for t in list_templates(self.workflow_dirs).templates}
        for spec in variants:
            if spec.prompt is None and spec.workflow is None:
                raise ABTestError(f"variant {spec.label} names neither a prompt version nor a workflow")
            if (spec.prompt is None) != (spec.version is None):
                raise ABTestError(f"variant {spec.label}: give the prompt as NAME@VERSION (e.g. hero@2)")
            if spec.workflow is not None and spec.workflow not in known:
                raise ABTestError(f"variant {spec.label}: unknown workflow '{spec.workflow}'; choose one of: "
                                  f"{', '.join(sorted(known))}")

    async def get(self, name: str) -> ABTest:
        """A test and its variants."""
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT * FROM ab_tests WHERE name = %s", (name,))
            row = await cur.fetchone()
            if row is None:
                raise ABTestNotFoundError(f"no A/B test named '{name}'; `atelier ab list` shows them")
            return await self._with_variants(conn, row)

    @staticmethod
    async def _with_variants(conn: psycopg.AsyncConnection[DictRow], row: DictRow) -> ABTest:
        """The test row with its variants attached."""
        cur = await conn.execute("SELECT * FROM ab_variants WHERE test = %s ORDER BY position", (row["name"],))
        variants = [Variant.model_validate(v) for v in await cur.fetchall()]
        return ABTest.model_validate({**row, "variants": variants})

    async def all(self, *, status: str | None = None, author: str | None = None) -> list[ABTest]:
        """Every test (or those `running` / `stopped`, and/or by `author`), newest first."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT * FROM ab_tests WHERE (%(s)s::text IS NULL OR status = %(s)s) "
                "AND (%(a)s::text IS NULL OR author = %(a)s) ORDER BY created_at DESC",
                {"s": status, "a": author})
            return [await self._with_variants(conn, row) for row in await cur.fetchall()]

    async def running_for(self, purpose: str, *, for_owner: str | None = None) -> ABTest | None:
        """The running test that applies to images of this purpose, if any (with `for_owner`: only a test whose
        author may shape that person's images — theirs, an admin's or an operator's)."""
        trusted = f" AND {TRUSTED_AUTHOR}" if for_owner is not None else ""
        async with self.pool.connection() as conn:
            cur = await conn.execute(f"SELECT * FROM ab_tests WHERE status = 'running' AND purpose = %(purpose)s"
                                     f"{trusted}".encode(), {"purpose": purpose.strip().lower(), "owner": for_owner})
            row = await cur.fetchone()
            return None if row is None else await self._with_variants(conn, row)

    async def stop(self, name: str, by: str, *, admin: bool = False) -> ABTest:
        """Stop assigning the test's variants (its data and report stay): `by` its author or an `admin` only."""
        test = await self.get(name)
        if test.author != by and not admin:
            raise not_yours("A/B test", name, test.author, by,
                            "Ask them or an admin to stop it; to compare other variants, start your own test "
                            "(POST /ab-tests) under another name.")
        async with self.pool.connection() as conn:
            await conn.execute("UPDATE ab_tests SET status = 'stopped', stopped_at = coalesce(stopped_at, now()) "
                               "WHERE name = %s", (name,))
        return await self.get(name)

    async def assign(self, name: str, request_key: str) -> Variant:
        """The variant a request gets in a running test."""
        test = await self.get(name)
        if test.status != "running":
            raise ABTestError(f"A/B test '{name}' is stopped; it assigns no more variants")
        return assign_variant(test.name, test.variants, request_key)

    async def report(self, name: str) -> ABReport:
        """Each variant's uses, ratings and P(best); the chi-square check; significance and a recommendation."""
        test = await self.get(name)
        async with self.pool.connection() as conn:
            cur = await conn.execute(_REPORT, (name,))
            counts = {row["variant"]: row for row in await cur.fetchall()}
        outcomes = [Outcome(v.label, int(counts[v.label]["rated"]) if v.label in counts else 0,
                            int(counts[v.label]["liked"]) if v.label in counts else 0) for v in test.variants]
        verdict = decide(outcomes, min_ratings=test.min_ratings)
        lines = []
        for variant, outcome in zip(test.variants, outcomes, strict=True):
            row = counts.get(variant.label)
            lines.append(VariantReport(
                label=variant.label, arm=variant.describe(), weight=variant.weight,
                uses=int(row["uses"]) if row else 0, rated=outcome.rated, liked=outcome.liked,
                like_rate=round(outcome.liked / outcome.rated, 4) if outcome.rated else None,
                mean_stars=round(row["mean_stars"], 3) if row and row["mean_stars"] is not None else None,
                p_best=verdict.p_best[variant.label]))
        return ABReport(test=test.name, status=test.status, purpose=test.purpose, method=METHOD,
                        min_ratings=test.min_ratings, variants=lines, chi2=verdict.chi2, p_value=verdict.p_value,
                        significant=verdict.significant, leader=verdict.leader,
                        recommendation=verdict.recommendation)
