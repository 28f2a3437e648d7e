"""Inferring bindings (prompt, seed, size, …) from a workflow graph's structure when it has no sidecar."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from atelier.tools.comfyui.template_graph import (
    IMAGE_LOADERS,
    LATENT_LINKS,
    PARAM_KINDS,
    SAMPLER_HELPERS,
    SAMPLER_VALUES,
    TEXT_INPUTS,
    Graph,
    input_link,
    is_link,
    is_number,
    node_class,
    node_ids,
    node_inputs,
    node_ref,
    node_title,
)
from atelier.tools.comfyui.template_models import Binding
from atelier.tools.errors import WorkflowError

# ----------------------------------------------------------------------------- inference


@dataclass
class InferredBindings:
    """What inference has bound so far, and why."""

    graph: Graph
    bindings: dict[str, list[Binding]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    unbound: dict[str, str] = field(default_factory=dict)

    def bind(self, param: str, targets: Sequence[tuple[Binding, str]]) -> None:
        """Bind a parameter to these targets, with a note per target."""
        unique = dict(targets)
        self.bindings[param] = list(unique)
        for target, why in unique.items():
            ref = node_ref(self.graph, target.node_id)
            self.notes.append(f"{param} → {ref} input {target.input}: {why}")

    def skip(self, param: str, reason: str) -> None:
        """Leave a parameter unbound, saying why."""
        self.unbound[param] = reason
        self.notes.append(f"{param} not bound: {reason}")


def _samplers(graph: Graph) -> list[str]:
    """Nodes that sample a latent (a linked `latent_image`)."""
    return [n for n in node_ids(graph) if input_link(graph, n, "latent_image") is not None]


def _text_inputs(graph: Graph, node_id: str) -> list[str]:
    """The prompt-text inputs of a text encoder (value or link)."""
    inputs = node_inputs(graph, node_id)
    return [n for n in TEXT_INPUTS if isinstance(inputs.get(n), str) or is_link(inputs.get(n))]


def _conditioning(graph: Graph, sampler: str) -> dict[str, tuple[str, str, tuple[str, int]]]:
    """Role → (node that takes it, its input, link) for a sampler's positive and negative conditioning."""
    holder = sampler
    if input_link(graph, sampler, "positive") is None and (guider := input_link(graph, sampler, "guider")):
        holder = guider[0]
    roles: dict[str, tuple[str, str, tuple[str, int]]] = {}
    for role, names in (("positive", ("positive", "conditioning")), ("negative", ("negative",))):
        for name in names:
            if (link := input_link(graph, holder, name)) is not None:
                roles[role] = (holder, name, link)
                break
    return roles


def _encoders(graph: Graph, link: tuple[str, int], seen: set[str]) -> list[str]:
    """The text encoders a conditioning link comes from, through conditioning nodes."""
    source, slot = link
    if source in seen:
        return []
    seen.add(source)
    if _text_inputs(graph, source):
        return [source]
    inputs = node_inputs(graph, source)
    if is_link(inputs.get("positive")) and is_link(inputs.get("negative")):
        follow = ["positive" if slot == 0 else "negative"]
    else:
        follow = [n for n, v in inputs.items() if n.startswith("conditioning") and is_link(v)]
    found: list[str] = []
    for name in follow:
        next_link = input_link(graph, source, name)
        if next_link is not None:
            found += _encoders(graph, next_link, seen)
    return found


def _title_words(graph: Graph, node_id: str) -> set[str]:
    """The lower-case words of a node's title."""
    return set(re.findall(r"[a-z]+", node_title(graph, node_id).casefold()))


def _title_role(graph: Graph, node_id: str) -> str | None:
    """'positive' or 'negative' when a node's title says so ('Positive prompt', 'Negative', 'Prompt')."""
    words = re.findall(r"[a-z]+", node_title(graph, node_id).casefold())
    if "negative" in words:
        return "negative"
    if "positive" in words or words in (["prompt"], ["main", "prompt"]):
        return "positive"
    return None


def _string_source(graph: Graph, node_id: str) -> str | None:
    """The one literal text input of a primitive-like node feeding a text input."""
    texts = [n for n, v in node_inputs(graph, node_id).items() if isinstance(v, str)]
    return texts[0] if len(texts) == 1 else None


def _text_targets(graph: Graph, encoder: str) -> list[Binding]:
    """Where an encoder's text lives: its own inputs, or the primitive that feeds them."""
    targets: list[Binding] = []
    for name in _text_inputs(graph, encoder):
        value = node_inputs(graph, encoder)[name]
        if isinstance(value, str):
            targets.append(Binding(node_id=encoder, input=name))
        elif (source_input := _string_source(graph, value[0])) is not None:
            targets.append(Binding(node_id=value[0], input=source_input))
    return targets


def _ambiguous(graph: Graph, param: str, candidates: Mapping[str, str], where: str) -> WorkflowError:
    """The error naming every encoder that could hold a prompt."""
    listed = "; ".join(f"{node_ref(graph, n)}, which {why}" for n, why in candidates.items())
    title = "Positive prompt" if param == "prompt" else "Negative prompt"
    return WorkflowError(
        f"{where}: cannot tell which node holds the {param}: {listed}. In ComfyUI give the right one the title "
        f"'{title}' (right-click → Title) and export again, or add a sidecar .meta.json with "
        f'"bindings": {{"{param}": ["<node id>", "text"]}}'
    )


def _pick_encoder(graph: Graph, param: str, candidates: dict[str, str], where: str) -> tuple[str, str] | None:
    """The one encoder for prompt/negative among candidates (a title decides between several)."""
    role = "positive" if param == "prompt" else "negative"
    if len(candidates) > 1:
        titled = [n for n in candidates if _title_role(graph, n) == role]
        if len(titled) != 1:
            raise _ambiguous(graph, param, candidates, where)
        return titled[0], f"{candidates[titled[0]]} (chosen by its title)"
    if candidates:
        node_id = next(iter(candidates))
        return node_id, candidates[node_id]
    titled = [n for n in node_ids(graph) if _text_inputs(graph, n) and _title_role(graph, n) == role]
    if len(titled) > 1:
        raise _ambiguous(graph, param, {n: "has that title" for n in titled}, where)
    return (titled[0], "its title says so") if titled else None


def _encoder_candidates(graph: Graph, samplers: Sequence[str]) -> dict[str, dict[str, str]]:
    """Role → {encoder: why} over all samplers."""
    found: dict[str, dict[str, str]] = {"positive": {}, "negative": {}}
    for sampler in samplers:
        for role, (holder, name, link) in _conditioning(graph, sampler).items():
            for encoder in _encoders(graph, link, set()):
                found[role].setdefault(encoder, f"feeds {node_class(graph, holder)} {holder}'s {name}")
    return found


def _infer_prompts(graph: Graph, samplers: Sequence[str], found: InferredBindings, where: str) -> None:
    """Bind prompt and negative to the encoders feeding the samplers."""
    candidates = _encoder_candidates(graph, samplers)
    for encoder in [e for e in candidates["negative"] if e in candidates["positive"]]:
        del candidates["negative"][encoder]
        found.skip("negative", f"the negative conditioning is derived from the prompt's {node_ref(graph, encoder)}")
    for param, role in (("prompt", "positive"), ("negative", "negative")):
        picked = _pick_encoder(graph, param, candidates[role], where)
        if picked is None:
            continue
        targets = _text_targets(graph, picked[0])
        if targets:
            found.unbound.pop(param, None)
            found.bind(param, [(t, picked[1]) for t in targets])
        else:
            found.skip(param, f"{node_ref(graph, picked[0])} takes its text from a node Atelier cannot follow")


def _number_target(graph: Graph, node_id: str, name: str) -> Binding | None:
    """A node's numeric input, or the single number of a primitive linked into it."""
    value = node_inputs(graph, node_id).get(name)
    if is_number(value):
        return Binding(node_id=node_id, input=name)
    if is_link(value):
        numbers = [n for n, v in node_inputs(graph, value[0]).items() if is_number(v)]
        links = [v for v in node_inputs(graph, value[0]).values() if is_link(v)]
        if len(numbers) == 1 and not links:
            return Binding(node_id=value[0], input=numbers[0])
    return None


def _sampler_parts(graph: Graph, sampler: str) -> list[tuple[str, str]]:
    """The sampler and the nodes feeding its noise, sigmas and guider, with how they relate."""
    parts = [(sampler, f"of {node_class(graph, sampler)} {sampler}")]
    for helper in SAMPLER_HELPERS:
        if (link := input_link(graph, sampler, helper)) is not None:
            how = f"of {node_class(graph, link[0])} {link[0]}, the {helper} of {node_class(graph, sampler)} {sampler}"
            parts.append((link[0], how))
    return parts


def _value_target(graph: Graph, sampler: str, names: Sequence[str]) -> tuple[Binding, str] | None:
    """Where one sampler's seed/steps/cfg/denoise lives."""
    for node_id, how in _sampler_parts(graph, sampler):
        for name in names:
            if (target := _number_target(graph, node_id, name)) is not None:
                via = "" if target.node_id == node_id else "the value feeding "
                return target, f"{via}the {name} {how}"
    return None


def current_value(graph: Graph, target: Binding) -> Any:
    """A bound input's current value."""
    return node_inputs(graph, target.node_id)[target.input]


def _bind_agreeing(
    found: InferredBindings, param: str, targets: list[tuple[Binding, str]], *, always: bool = False
) -> None:
    """Bind all targets when their current values agree (or `always`), else leave the parameter unbound."""
    if not targets:
        return
    values = {json.dumps(current_value(found.graph, t)) for t, _ in targets}
    if always or len(values) == 1:
        found.bind(param, targets)
        return
    listed = ", ".join(
        f"{node_ref(found.graph, t.node_id)} {t.input}={current_value(found.graph, t)!r}" for t, _ in targets
    )
    found.skip(param, f"the workflow uses different values ({listed}); bind the right one in a .meta.json sidecar")


def _infer_sampler_values(graph: Graph, samplers: Sequence[str], found: InferredBindings) -> None:
    """Bind seed, steps, cfg and denoise on the samplers (or their noise/sigmas/guider nodes)."""
    for param, names in SAMPLER_VALUES.items():
        targets = [t for s in samplers if (t := _value_target(graph, s, names)) is not None]
        _bind_agreeing(found, param, targets, always=param == "seed")


def _latent_origin(graph: Graph, node_id: str) -> str:
    """The node at the start of a latent chain (EmptyLatentImage, VAEEncode, …)."""
    seen: set[str] = set()
    current = node_id
    while current not in seen:
        seen.add(current)
        link = next((found for n in LATENT_LINKS if (found := input_link(graph, current, n))), None)
        if link is None:
            return current
        current = link[0]
    return current


def _start_phrase(samplers: Sequence[str]) -> str:
    """'KSampler 3 starts from' / 'KSampler 3 and KSampler 13 start from'."""
    return " and ".join(samplers) + (" start from" if len(samplers) > 1 else " starts from")


def _infer_size(graph: Graph, samplers: Sequence[str], found: InferredBindings) -> None:
    """Bind width, height and batch_size on the empty latent the samplers start from."""
    starts: dict[str, list[str]] = {}
    for sampler in samplers:
        starts.setdefault(_latent_origin(graph, sampler), []).append(f"{node_class(graph, sampler)} {sampler}")
    sized = [o for o in starts if all(is_number(node_inputs(graph, o).get(n)) for n in ("width", "height"))]
    for param in ("width", "height", "batch_size"):
        targets = [
            (Binding(node_id=o, input=param), f"the {param} of the latent {_start_phrase(starts[o])}")
            for o in sized
            if is_number(node_inputs(graph, o).get(param))
        ]
        _bind_agreeing(found, param, targets)


def _infer_image(graph: Graph, found: InferredBindings) -> None:
    """Bind input_image to the one LoadImage (or the one titled as the input)."""
    loaders = [
        n
        for n in node_ids(graph)
        if node_class(graph, n) in IMAGE_LOADERS and isinstance(node_inputs(graph, n).get("image"), str)
    ]
    if len(loaders) > 1:
        titled = [n for n in loaders if {"input", "source", "init"} & _title_words(graph, n)]
        if len(titled) != 1:
            listed = ", ".join(node_ref(graph, n) for n in loaders)
            found.skip("input_image", f"several images are loaded ({listed}); title the input one 'Input image'")
            return
        loaders = titled
    if loaders:
        found.bind("input_image", [(Binding(node_id=loaders[0], input="image"), "the image it loads")])


def infer_bindings(graph: Graph, where: str) -> InferredBindings:
    """Read the parameter bindings off the graph's structure (see the module docstring)."""
    found = InferredBindings(graph=graph)
    samplers = _samplers(graph)
    if not samplers:
        found.notes.append("no sampler found (KSampler, SamplerCustom, …): only titles and LoadImage can be bound")
    _infer_prompts(graph, samplers, found, where)
    _infer_sampler_values(graph, samplers, found)
    _infer_size(graph, samplers, found)
    _infer_image(graph, found)
    if not found.bindings:
        raise WorkflowError(
            f"{where}: found nothing Atelier could set (no sampler with a text prompt, no LoadImage); add a "
            'sidecar .meta.json with "bindings", e.g. {"prompt": ["<node id>", "text"]}'
        )
    found.bindings = {p: found.bindings[p] for p in PARAM_KINDS if p in found.bindings}
    return found


