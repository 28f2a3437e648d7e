"""The A/B statistics: a Bayesian beta-binomial P(best) per variant, Pearson's chi-square, and the recommendation.

An image counts as *liked* when rated ★4–★5, or (unrated in stars) thumbed up; ★1–★3 or a thumb down is
*not liked*; an image with neither is not part of the sample. Each variant's like-rate gets a Beta(1, 1)
(uniform) prior, so its posterior is Beta(1 + liked, 1 + rated − liked); P(best) is the probability that its
like-rate is the highest of all variants, integrated numerically. A difference is called significant when
one variant's P(best) reaches the threshold (0.95) and every variant has at least the test's minimum number
of ratings; Pearson's chi-square test of independence (no continuity correction) is reported beside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import integrate, stats

__all__ = ["THRESHOLD", "Outcome", "Verdict", "chi_square", "decide", "probability_best"]

THRESHOLD = 0.95
PRIOR = (1.0, 1.0)


@dataclass(frozen=True)
class Outcome:
    """One variant's sample: how many of its images were rated and how many of those were liked."""

    label: str
    rated: int
    liked: int

    def posterior(self) -> tuple[float, float]:
        """The Beta posterior's (alpha, beta) under the uniform prior."""
        return PRIOR[0] + self.liked, PRIOR[1] + self.rated - self.liked


@dataclass(frozen=True)
class Verdict:
    """What the numbers say: each variant's P(best), the chi-square check, significance and the advice."""

    p_best: dict[str, float]
    chi2: float | None
    p_value: float | None
    significant: bool
    leader: str | None
    recommendation: str


def probability_best(outcomes: Sequence[Outcome]) -> list[float]:
    """P(variant i has the highest like-rate), for each variant, under independent Beta posteriors."""
    if not outcomes:
        return []
    if len(outcomes) == 1:
        return [1.0]
    dists = [stats.beta(*o.posterior()) for o in outcomes]
    means = sorted({float(d.mean()) for d in dists})
    result = []
    for i, own in enumerate(dists):
        others = [d for j, d in enumerate(dists) if j != i]

        def density(x: float, own: stats.rv_continuous = own, others: list[stats.rv_continuous] = others) -> float:
            value = float(own.pdf(x))
            for other in others:
                value *= float(other.cdf(x))
            return value

        area, _err = integrate.quad(density, 0.0, 1.0, points=means, limit=200)
        result.append(area)
    total = sum(result)
    return [p / total for p in result] if total > 0 else [1.0 / len(outcomes)] * len(outcomes)


def chi_square(outcomes: Sequence[Outcome]) -> tuple[float, float] | None:
    """Pearson's chi-square (statistic, p-value) for liked × variant; None when it is undefined."""
    table = [[o.liked, o.rated - o.liked] for o in outcomes]
    if len(table) < 2 or any(sum(row) == 0 for row in table) or any(sum(col) == 0 for col in zip(*table, strict=True)):
        return None
    statistic, p_value, _dof, _expected = stats.chi2_contingency(table, correction=False)
    return float(statistic), float(p_value)


def decide(outcomes: Sequence[Outcome], *, min_ratings: int, threshold: float = THRESHOLD) -> Verdict:
    """The verdict and a recommendation in words; says "not enough data" until every variant has `min_ratings`."""
    p_best = probability_best(outcomes)
    by_label = {o.label: round(p, 4) for o, p in zip(outcomes, p_best, strict=True)}
    check = chi_square(outcomes)
    chi2, p_value = (round(check[0], 4), round(check[1], 4)) if check else (None, None)
    if len(outcomes) < 2:
        return Verdict(by_label, chi2, p_value, False, None, "a test needs at least two variants")
    best_index = max(range(len(outcomes)), key=lambda i: p_best[i])
    leader = outcomes[best_index]
    short = [o for o in outcomes if o.rated < min_ratings]
    if short:
        needs = ", ".join(f"{o.label} has {o.rated} of {min_ratings}" for o in short)
        missing = sum(min_ratings - o.rated for o in short)
        return Verdict(by_label, chi2, p_value, False, leader.label,
                       f"not enough data yet: every variant needs {min_ratings} rated images ({needs}); "
                       f"{missing} more rating(s) to go. Keep the test running and rate the images.")
    rate = _percent(leader)
    if p_best[best_index] >= threshold:
        rest = ", ".join(f"{o.label} {_percent(o)}" for o in outcomes if o is not leader)
        return Verdict(by_label, chi2, p_value, True, leader.label,
                       f"use {leader.label}: liked {rate} against {rest}; P(best) = {p_best[best_index]:.3f} "
                       f"≥ {threshold:g}. Stop the test and make {leader.label} the default.")
    return Verdict(by_label, chi2, p_value, False, leader.label,
                   f"no clear winner yet: {leader.label} leads (liked {rate}) but P(best) = "
                   f"{p_best[best_index]:.3f} < {threshold:g}. Keep the test running; if it stays this close, the "
                   "variants are about equally good.")


def _percent(outcome: Outcome) -> str:
    """`liked/rated (pp%)` for a variant."""
    share = 100.0 * outcome.liked / outcome.rated if outcome.rated else math.nan
    return f"{outcome.liked}/{outcome.rated} ({share:.0f}%)" if outcome.rated else "0/0"
