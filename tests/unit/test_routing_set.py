"""Routing measured on the labelled set (tests/data/routing_requests.jsonl): the accuracy floor, how rarely the rules
guess wrong, the calls they save, and the traps the issue named, in English and Portuguese."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Literal

import pytest

from atelier.agents.llm import Meter
from atelier.graphs.routing import classify, normalise
from atelier.graphs.state import INTENTS, Intent
from bench.routing import Request, ScriptedRouter, evaluate, load_requests, route

REQUESTS = load_requests()
# Measured on the 464 requests of the set when this floor was written: 0 wrong decisions by the rules alone, 12
# unsure (2.6 %), rules + a model that answers the label 1.000 with 0.026 calls per request. On the three batches
# written after a round of rules, before the rules saw them, the rules were wrong on 7 of 56, then 4 of 61, then 1 of
# 56 (bench/routing.py's docstring); the floor leaves room for one wrong decision in 200 as rules and set grow, and a
# change that makes the rules guess more must say so here.
RULES_WRONG_AT_MOST = 0.005
ACCURACY_AT_LEAST = 0.97
CALLS_AT_MOST = 1.1


def test_the_set_covers_every_intent_in_both_languages_with_traps() -> None:
    assert len(REQUESTS) >= 200 and len({r.text for r in REQUESTS}) == len(REQUESTS)
    per_intent: Counter[tuple[str, str]] = Counter((r.intent, r.lang) for r in REQUESTS)
    assert all(per_intent[intent, lang] >= 10 for intent in INTENTS for lang in ("en", "pt")), per_intent
    assert sum(r.lang == "pt" for r in REQUESTS) >= len(REQUESTS) / 3
    assert sum(r.lure is not None for r in REQUESTS) >= 50  # requests whose words suggest another intent
    assert all(r.lure != r.intent for r in REQUESTS)


def test_rules_with_the_model_as_fallback_meet_the_floor_and_rarely_call_it() -> None:
    model = ScriptedRouter(labels={r.text: r for r in REQUESTS}, trap_error=0.0, plain_error=0.0)
    report = asyncio.run(evaluate(REQUESTS, model))
    assert report.accuracy("rules + LLM") >= ACCURACY_AT_LEAST
    assert report.calls_per_request("rules + LLM") <= CALLS_AT_MOST
    assert report.calls_per_request("LLM only") == 1.0 and report.calls_per_request("rules alone") == 0.0
    assert len(report.rules_wrong) <= RULES_WRONG_AT_MOST * len(REQUESTS), report.rules_wrong
    assert report.unsure <= 0.1 * len(REQUESTS)  # the rules decide at least 90 % themselves
    assert all(report.accuracy("rules + LLM", intent) >= 0.9 for intent in INTENTS)


def test_a_model_that_errs_on_traps_is_what_the_rules_improve_on() -> None:
    model = ScriptedRouter(labels={r.text: r for r in REQUESTS}, trap_error=0.3, plain_error=0.02, seed=19)
    report = asyncio.run(evaluate(REQUESTS, model))
    assert report.accuracy("rules + LLM") >= ACCURACY_AT_LEAST > report.accuracy("LLM only")
    wrong = [r for r in REQUESTS if model.intent_for(r.text) != r.intent]
    assert wrong and all(model.intent_for(r.text) == r.lure for r in wrong if r.lure)  # fooled by the words
    assert [model.intent_for(r.text) for r in REQUESTS] == [model.intent_for(r.text) for r in REQUESTS]


# The traps and their kin, each in English and Portuguese: (request, intent). "rules" means the rules
# decide it themselves; "rules or model" that they may be unsure and ask the model (never that they guess wrong).
TRAPS: list[tuple[str, Intent, Literal["rules", "rules or model"]]] = [
    ("What colour should I paint a small kitchen?", "answer", "rules"),
    ("De que cor devo pintar uma cozinha pequena?", "answer", "rules"),
    ("Can you draw conclusions from these numbers?", "answer", "rules"),
    ("Desenhe um plano de negócios para a minha loja.", "answer", "rules"),
    ("Generate a list of five names for a bakery.", "answer", "rules"),
    ("Gere uma lista de cinco nomes para uma padaria.", "answer", "rules"),
    ("Picture this: you have 100 euros and a free weekend in Porto. What would you do?", "answer", "rules"),
    ("Imagina só: tens 100 euros e um fim de semana livre no Porto. O que farias?", "answer", "rules"),
    ("Picture this: a castle made of candy under a pink sky, digital art.", "generate", "rules"),
    ("Imagina uma floresta encantada com cogumelos luminosos, em aquarela.", "generate", "rules or model"),
    ("Quanto custa gerar 50 imagens?", "cost", "rules"),
    ("How much would it cost to generate 50 images?", "cost", "rules"),
    ("Quanto custa um quilo de café em Lisboa?", "answer", "rules"),
    ("Desenhe um gato dormindo em cima de uma pilha de livros.", "generate", "rules"),
    ("Draw a cat sleeping on a stack of books.", "generate", "rules"),
    ("De acordo com meus documentos, qual é o prazo de entrega?", "retrieve", "rules"),
    ("According to my documents, what is the delivery deadline?", "retrieve", "rules"),
    ("Please render my account inactive until March.", "answer", "rules or model"),
    ("Sketch out a plan for my week: gym, two deadlines and a dentist.", "answer", "rules"),
    ("Me ajuda a esboçar um plano de estudos para o ENEM?", "answer", "rules"),
    ("How do I make an image sharper in GIMP?", "answer", "rules"),
    ("Como deixo uma imagem mais nítida no GIMP?", "answer", "rules"),
    ("Make the background of this photo blue.", "edit", "rules"),
    ("Mude o fundo desta foto para azul.", "edit", "rules"),
    ("Find my earlier cat pictures.", "images", "rules"),
    ("Mostre opções parecidas com o meu último logotipo.", "images", "rules"),
]


@pytest.mark.parametrize(("text", "intent", "decided_by"), TRAPS)
def test_named_traps_route_right_in_both_languages(text: str, intent: Intent, decided_by: str) -> None:
    said = classify(text)
    assert said == intent if decided_by == "rules" else said in (intent, None), (text, said)
    model = ScriptedRouter(labels={text: Request(text=text, intent=intent, lang="en")})
    meter = Meter("classify")
    assert asyncio.run(route("rules + LLM", model, text, meter)) == intent
    assert meter.calls == (0 if said is not None else 1)


def test_portuguese_is_read_with_or_without_accents() -> None:
    assert normalise("Mude o FUNDO   desta foto, à noite") == "mude o fundo desta foto, a noite"
    assert classify("Quanto custa gerar 50 imagens?") == classify("quanto custa gerar 50 imagens") == "cost"
    assert classify("Crie uma ilustração de um farol") == classify("crie uma ilustracao de um farol") == "generate"
