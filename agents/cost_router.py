"""Cost/VRAM router: picks the workflow by rules, purpose, urgency, live VRAM and budget; says why and what it costs.

Which workflows take part: every workflow of the library (shipped, ATELIER_WORKFLOWS_DIR, with the figures of
ATELIER_MODELS_CONFIG) whose task is the request's (a catalog's task, else the one read off its graph). Before
anything is ranked, a workflow is ruled out, with the reason kept for the explanation, when:

- the servers listed their model files (`inventories`) and none has all the files it loads;
- its catalog VRAM need exceeds the free VRAM (when known);
- a budget is set and it costs more per image (or its cost is unknown);
- the person asked for a quality tier it is not of.

Then the first of these decides:

1. the workflow the person named (`workflow`): "chosen by you";
2. the models config's `routing_rules`, in this order, each only when its model's workflow is still in the running
   (task, models, VRAM, budget, tier) and its expected time fits `target_seconds`:
   a. `by_purpose` (the purpose, loosely spelled: "hero" matches `hero_image`), and only when its expected time
      fits the urgency (immediate: at most 30 s, standard: at most 120 s, flexible: any; §12's bounds),
   b. `by_urgency` (the request's urgency, "standard" when none was said),
   c. `by_available_vram` (low under 8 GB, medium 8–12 GB, high over 12 GB free; only when free VRAM is known);
3. the catalog heuristics: the workflows catalogued for the purpose (all when none is), ranked by urgency
   (immediate: the fastest; standard: the best tier typically done within 120 s; flexible: the best tier).

With `target_seconds`, a choice expected to take longer steps down a quality tier at a time until one fits
(adaptive quality). Expected times are the measured averages (`measured`) where a workflow has run, else the
catalog's; a workflow without a catalog entry has unknown quality, VRAM and cost (it ranks below catalogued ones)
and is assumed to take UNKNOWN_SECONDS until it has run. `RouteChoice` carries the deciding rule, the rules that
did not apply and every alternative with why it lost (`atelier workflows --explain`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import BaseModel, Field

from atelier.tools.catalog import URGENCIES, list_templates, normalize_purpose, task_of
from atelier.tools.comfyui.model_inventory import ModelInventory, unready_reason
from atelier.tools.comfyui.templates import WorkflowTemplate
from atelier.tools.errors import WorkflowError
from atelier.tools.models_config import vram_tier
from atelier.tools.workflow_library import WorkflowLibrary, build_library

__all__ = ["QUALITIES", "RULE_SECONDS", "UNKNOWN_SECONDS", "Alternative", "RouteChoice", "choose_route",
           "purpose_key"]

QUALITIES = ("fast", "medium", "high", "ultra")
# Urgency → the longest expected time at which a purpose rule still applies (integration-ideas §12).
RULE_SECONDS: dict[str, float | None] = {"immediate": 30.0, "standard": 120.0, "flexible": None}
# The time assumed for a workflow that has no catalog entry and has never run.
UNKNOWN_SECONDS = 60.0

_PURPOSES = {"hero": "hero_images", "lifestyle": "product_shots", "detail": "product_shots",
             "thumbnail": "thumbnails", "illustration": "illustration", "social media": "social_media",
             "social": "social_media", "preview": "previews"}


class Alternative(BaseModel):
    """A workflow the router considered and did not choose, and why."""

    workflow: str
    why: str


class RouteChoice(BaseModel):
    """The workflow chosen for one image, with the reasons and the estimate."""

    workflow: str
    reason: str
    seconds: float
    cost: float
    vram_gb: float
    rule: str | None = Field(None, description="The routing rule that decided, e.g. "
                                               "'routing_rules.by_purpose.thumbnail → qwen-image-fast'.")
    rules_skipped: list[str] = Field(default_factory=list, description="Rules tried first that did not apply, why.")
    alternatives: list[Alternative] = Field(default_factory=list)


def purpose_key(purpose: str) -> str | None:
    """The catalog use case a brief's purpose maps to (None: any)."""
    return _PURPOSES.get(purpose.strip().lower())


class _Router:
    """One routing decision: the pool, what was ruled out and why, and the rules tried."""

    def __init__(self, library: WorkflowLibrary, *, purpose: str | None, urgency: str, vram_free_gb: float | None,
                 budget: float | None, quality: str | None, target_seconds: float | None,
                 measured: Mapping[str, float], inventories: Sequence[ModelInventory], task: str) -> None:
        self.library, self.purpose, self.urgency, self.task = library, purpose, urgency, task
        self.vram, self.budget, self.quality, self.target = vram_free_gb, budget, quality, target_seconds
        self.measured = measured
        self.out: dict[str, str] = {}
        self.kind: dict[str, str] = {}
        self.skipped: list[str] = []
        self.everyone = [t for t in library.templates if task_of(t) == task]
        self.base: list[WorkflowTemplate] = []
        for template in self.everyone:
            unready = unready_reason(template, inventories)
            kind, why = ("models", unready) if unready else self._misfit(template)
            if why:
                self.out[template.name], self.kind[template.name] = why, kind
            else:
                self.base.append(template)
        self.pool = []
        for template in self.base:
            entry = template.catalog
            if quality is not None and (entry is None or entry.quality != quality):
                self.out[template.name] = f"not of the {quality} tier you asked for"
                self.kind[template.name] = "tier"
            else:
                self.pool.append(template)

    # --- figures --------------------------------------------------------------------------------------------------

    def seconds(self, template: WorkflowTemplate) -> float:
        """Expected seconds: measured when it has run, else the catalog's, else UNKNOWN_SECONDS."""
        if template.name in self.measured:
            return self.measured[template.name]
        return template.catalog.typical_seconds if template.catalog is not None else UNKNOWN_SECONDS

    @staticmethod
    def rank(template: WorkflowTemplate) -> int:
        """Quality rank (fast 0 … ultra 3; -1 without a catalog entry)."""
        return template.catalog.quality_rank if template.catalog is not None else -1

    def _misfit(self, template: WorkflowTemplate) -> tuple[str, str | None]:
        """(kind, why) VRAM or the budget rule a workflow out ("vram" or "budget"; why None: they do not)."""
        entry = template.catalog
        if entry is not None and self.vram is not None and entry.vram_gb > self.vram:
            return "vram", f"needs {entry.vram_gb:g} GB of VRAM, {self.vram:g} GB free"
        if self.budget is not None:
            if entry is None:
                return "budget", f"its cost is unknown (no catalog entry) and the budget is {self.budget:g} per image"
            if entry.cost_per_image > self.budget:
                return "budget", f"costs {entry.cost_per_image:g} per image, over the budget of {self.budget:g}"
        return "", None

    # --- refusals -------------------------------------------------------------------------------------------------

    def check_pool(self) -> None:
        """WorkflowError naming the reason and the fix when nothing is left to choose from."""
        if not self.everyone:
            tasks = sorted({task_of(t) for t in self.library.templates})
            raise WorkflowError(f"no workflow does the task '{self.task}'; known tasks: {', '.join(tasks) or 'none'} "
                                "(add a `catalog` with this `task` to a workflow's .meta.json sidecar)")
        if self.pool:
            return
        kinds = {self.kind[name] for name in self.out}
        priced = [t.catalog for t in self.everyone if t.catalog is not None]
        if kinds <= {"vram", "models"} and "vram" in kinds and self.vram is not None:
            smallest = min((t for t in self.everyone if t.catalog is not None),
                           key=lambda t: t.catalog.vram_gb if t.catalog else 0.0)
            raise WorkflowError(f"no workflow for {self.task} fits in {self.vram:g} GB of free VRAM: the smallest, "
                                f"'{smallest.name}', needs {smallest.catalog.vram_gb if smallest.catalog else 0:g} GB; "
                                "free GPU memory (unload other models)")
        if self.budget is not None and "budget" in kinds and priced:
            cheapest = min(self.everyone, key=lambda t: t.catalog.cost_per_image if t.catalog else float("inf"))
            if cheapest.catalog is not None and cheapest.catalog.cost_per_image > self.budget:
                raise WorkflowError(f"no workflow costs {self.budget:g} or less per image; the cheapest, "
                                    f"{cheapest.name}, costs {cheapest.catalog.cost_per_image:g}")
        reasons = "; ".join(f"{name} {why}" for name, why in self.out.items() if self.kind[name] != "tier")
        tier = f"{self.quality} " if self.quality else ""
        raise WorkflowError(f"no {tier}workflow for {self.task} can run now: {reasons or 'none is of that tier'}; "
                            "install the missing model files, free GPU memory, raise the budget or ask for another "
                            "tier")

    # --- deciding -------------------------------------------------------------------------------------------------

    def rule_choice(self) -> tuple[WorkflowTemplate, str] | None:
        """The first routing rule of the models config that applies, as (workflow, 'key → model'), or None."""
        config = self.library.config
        if config is None:
            return None
        rules = config.routing_rules
        tries: list[tuple[str, str | None, bool]] = []
        if self.purpose:
            hit = rules.for_purpose(self.purpose, purpose_key(self.purpose) or "")
            if hit is not None:
                tries.append((*hit, True))
        by_urgency = {str(key): model for key, model in rules.by_urgency.items()}
        if self.urgency in by_urgency:
            tries.append((f"routing_rules.by_urgency.{self.urgency}", by_urgency[self.urgency], False))
        by_vram = {str(key): model for key, model in rules.by_available_vram.items()}
        if by_vram and self.vram is None:
            tries.append(("routing_rules.by_available_vram", None, False))
        elif self.vram is not None and vram_tier(self.vram) in by_vram:
            tier = vram_tier(self.vram)
            tries.append((f"routing_rules.by_available_vram.{tier}", by_vram[tier], False))
        for where, model, by_purpose in tries:
            if model is None:
                self.skipped.append(f"{where} did not apply: free VRAM unknown (no server answered)")
                continue
            mapping = self.library.mappings[model]
            template = self.library.get(mapping.workflow)
            shown = model if mapping.workflow == model else f"{model} (workflow {mapping.workflow})"
            why = self._rule_misfit(template, by_purpose) if template is not None else "its workflow is not loaded"
            if why is None and template is not None:
                return template, f"{where} → {shown}"
            self.skipped.append(f"{where} → {shown} did not apply: {why}")
        return None

    def _rule_misfit(self, template: WorkflowTemplate, by_purpose: bool) -> str | None:
        """Why a rule's workflow cannot be used for this request (None: it can)."""
        if task_of(template) != self.task:
            return f"{template.name} does {task_of(template)}, not {self.task}"
        if template.name in self.out:
            return f"{template.name}: {self.out[template.name]}"
        seconds = self.seconds(template)
        if self.target is not None and seconds > self.target:
            return f"~{seconds:.3g} s, over your target of {self.target:g} s"
        limit = RULE_SECONDS.get(self.urgency)
        if by_purpose and limit is not None and seconds > limit:
            return f"~{seconds:.3g} s, more than {self.urgency} urgency allows ({limit:g} s)"
        return None

    def serving(self) -> list[WorkflowTemplate]:
        """The pool's workflows catalogued for the purpose (empty: none is, or no purpose)."""
        if not self.purpose:
            return []
        wanted = {normalize_purpose(self.purpose), normalize_purpose(purpose_key(self.purpose) or self.purpose)}
        return [t for t in self.pool if t.catalog is not None
                and any(normalize_purpose(case) in wanted for case in t.catalog.use_cases)]

    def heuristic_choice(self) -> tuple[WorkflowTemplate, str]:
        """The catalog's pick: purpose first, then ranked by urgency."""
        serving = self.serving()
        chosen = self.best(serving or self.pool)
        why = f"{self.urgency} urgency" + (f", catalogued for {purpose_key(self.purpose or '') or self.purpose}"
                                           if serving else "")
        return chosen, why

    def best(self, templates: Sequence[WorkflowTemplate]) -> WorkflowTemplate:
        """The best template for the urgency (see the module docstring)."""
        fastest = min(templates, key=lambda t: (self.seconds(t), -self.rank(t), t.name))
        limit = URGENCIES[self.urgency]
        if self.urgency == "immediate":
            return fastest
        within = [t for t in templates if limit is None or self.seconds(t) <= limit]
        if not within:
            return fastest
        return max(within, key=lambda t: (self.rank(t), -self.seconds(t), t.name))

    def within_time(self, template: WorkflowTemplate) -> tuple[WorkflowTemplate, str]:
        """Step down quality tiers (VRAM, models and budget permitting) to the best expected within the target."""
        assert self.target is not None
        lower = sorted((t for t in self.base if self.rank(t) < self.rank(template)),
                       key=lambda t: (-self.rank(t), self.seconds(t)))
        for candidate in lower:
            if self.seconds(candidate) <= self.target:
                return candidate, (f"stepped down from {template.name} ({self.seconds(template):.3g} s) to fit a "
                                   f"target of {self.target:g} s")
        fastest = min([template, *lower], key=self.seconds)
        return fastest, f"no workflow fits a target of {self.target:g} s; this is the fastest"

    # --- explaining -----------------------------------------------------------------------------------------------

    def alternatives(self, winner: WorkflowTemplate, rule: str | None) -> list[Alternative]:
        """Every other workflow of the task and why it lost."""
        serving = {t.name for t in self.serving()}
        found = []
        for template in self.everyone:
            if template.name == winner.name:
                continue
            why = self.out.get(template.name)
            if why is None and rule is not None:
                why = f"{rule} decided first ({self.summary(template)})"
            if why is None:
                why = self._lost(template, winner, serving)
            found.append(Alternative(workflow=template.name, why=why))
        return found

    def summary(self, template: WorkflowTemplate) -> str:
        """Tier, expected time and cost in a few words."""
        entry = template.catalog
        if entry is None:
            return f"no catalog entry, ~{self.seconds(template):.3g} s"
        return f"{entry.quality} quality, ~{self.seconds(template):.3g} s, {entry.cost_per_image:g} per image"

    def _lost(self, template: WorkflowTemplate, winner: WorkflowTemplate, serving: set[str]) -> str:
        """Why a workflow still in the running ranked below the winner."""
        if serving and template.name not in serving:
            return f"not catalogued for {purpose_key(self.purpose or '') or self.purpose}"
        seconds, best = self.seconds(template), self.seconds(winner)
        if self.target is not None and seconds > self.target:
            return f"~{seconds:.3g} s, over your target of {self.target:g} s"
        if template.catalog is None:
            return ("no catalog entry (quality unknown): pick it by name, or give it figures in its sidecar or "
                    "models_config.json")
        limit = URGENCIES[self.urgency]
        if self.urgency == "immediate" and seconds > best:
            return f"slower (~{seconds:.3g} s against ~{best:.3g} s) and the request is urgent"
        if limit is not None and seconds > limit and self.urgency != "immediate":
            return f"~{seconds:.3g} s, over what {self.urgency} urgency waits for ({limit:g} s)"
        if winner.catalog is not None and self.rank(template) < self.rank(winner):
            return f"lower quality ({template.catalog.quality} < {winner.catalog.quality})"
        return f"slower or ranked after {winner.name} (~{seconds:.3g} s against ~{best:.3g} s)"

    def explain(self, template: WorkflowTemplate, why: str, rule: str | None = None) -> RouteChoice:
        """The route for a template, with its estimate, the reasons in words and the alternatives."""
        entry, seconds = template.catalog, self.seconds(template)
        if template.name in self.measured:
            timing = f"~{seconds:.3g} s measured"
        elif entry is None:
            timing = f"time unknown until it has run ({UNKNOWN_SECONDS:g} s assumed)"
        else:
            timing = f"~{seconds:g} s"
        vram = f"{self.vram:g} GB free" if self.vram is not None else "VRAM unknown"
        budget = f", within a budget of {self.budget:g}" if self.budget is not None else ""
        if entry is None:
            reason = (f"{template.name}: your workflow without a catalog entry (quality, VRAM and cost unknown), "
                      f"{timing}, {why}{budget}")
        else:
            reason = (f"{template.name}: {entry.quality} quality, {timing} and {entry.cost_per_image:g} per image, "
                      f"needs {entry.vram_gb:g} GB ({vram}), {why}{budget}")
        return RouteChoice(workflow=template.name, reason=reason, seconds=round(seconds, 3),
                           cost=entry.cost_per_image if entry else 0.0, vram_gb=entry.vram_gb if entry else 0.0,
                           rule=rule, rules_skipped=list(self.skipped), alternatives=self.alternatives(template, rule))


def choose_route(purpose: str | None, *, urgency: str = "standard", vram_free_gb: float | None = None,
                 budget: float | None = None, quality: str | None = None, workflow: str | None = None,
                 target_seconds: float | None = None, measured: Mapping[str, float] | None = None,
                 library: WorkflowLibrary | None = None, inventories: Sequence[ModelInventory] | None = None,
                 task: str = "txt2img") -> RouteChoice:
    """The workflow for one image (see the module docstring for the order), with the reasons and the alternatives.

    `library` is what to choose from (`load_library(settings)`: the user's folders and models config; default: the
    shipped workflows only); `inventories` the model files each server that answered has (None or empty: unknown,
    nothing is ruled out for its files). A person's choice narrows it: `workflow` names one outright, `quality`
    keeps one tier.
    """
    level = (urgency or "standard").strip().lower()
    if level not in URGENCIES:
        raise WorkflowError(f"unknown urgency '{urgency}'; use one of: {', '.join(URGENCIES)}")
    if quality is not None and quality.strip().lower() not in QUALITIES:
        raise WorkflowError(f"unknown quality '{quality}'; use one of: {', '.join(QUALITIES)}")
    chosen_library = library if library is not None else build_library(list_templates())
    router = _Router(chosen_library, purpose=purpose, urgency=level, vram_free_gb=vram_free_gb, budget=budget,
                     quality=quality.strip().lower() if quality else None, target_seconds=target_seconds,
                     measured=dict(measured or {}), inventories=list(inventories or []), task=task)
    if workflow:
        return router.explain(_named(chosen_library, workflow, inventories or []), "chosen by you")
    router.check_pool()
    decided = router.rule_choice()
    if decided is not None:
        template, rule = decided
        return router.explain(template, rule, rule)
    template, why = router.heuristic_choice()
    if target_seconds is not None and router.seconds(template) > target_seconds:
        template, why = router.within_time(template)
    return router.explain(template, why)


def _named(library: WorkflowLibrary, name: str, inventories: Sequence[ModelInventory]) -> WorkflowTemplate:
    """A workflow of the library by name; WorkflowError when unknown or when no server has its model files."""
    template = library.get(name)
    if template is None:
        raise WorkflowError(f"unknown workflow '{name}'; choose one of: {', '.join(sorted(library.names()))}")
    missing = unready_reason(template, inventories)
    if missing:
        raise WorkflowError(f"workflow '{name}' cannot run on your servers now: {missing}; or choose another "
                            "(`atelier workflows`)")
    return template
