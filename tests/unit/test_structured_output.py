"""A structured answer that does not fit its schema: one retry that tells the model what was wrong, then a readable
StructuredOutputError; both tries are metered."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from atelier.agents.llm import Meter, StructuredOutputError, call_structured
from atelier.agents.planner import Plan, plan_request
from atelier.tools.errors import AtelierError
from tests.fakes.chat_model import ScriptedChatModel

SHOWCASE = {"briefs": [{"purpose": "hero", "subject": "a copper cup", "notes": "walnut table"}]}


def test_an_answer_that_does_not_fit_is_asked_for_again_with_what_was_wrong() -> None:
    llm = ScriptedChatModel(replies=[{"briefs": []}, SHOWCASE])
    meter = Meter("plan")
    plan = asyncio.run(plan_request(llm, "Plan a showcase for a copper cup", meter))
    assert isinstance(plan, Plan) and plan.briefs[0].subject == "a copper cup"
    assert meter.calls == 2 and len(llm.calls) == 2 and meter.hop()["llm_calls"] == 2
    first, second = llm.calls
    assert second[:len(first)] == first  # the same conversation, then the bad answer and the correction
    assert isinstance(second[-2], AIMessage) and second[-2].content == '{"briefs": []}'
    correction = second[-1]
    assert isinstance(correction, HumanMessage)
    assert "briefs: List should have at least 1 item" in str(correction.content)
    assert "the fields: briefs" in str(correction.content) and "Plan" in str(correction.content)


def test_two_answers_that_do_not_fit_raise_a_readable_error() -> None:
    llm = ScriptedChatModel(replies=[{"briefs": []}, {"briefs": [{"purpose": "hero"}]}])
    meter = Meter("plan")
    with pytest.raises(StructuredOutputError) as caught:
        asyncio.run(plan_request(llm, "Plan a showcase", meter))
    assert isinstance(caught.value, AtelierError)
    assert str(caught.value) == ("the model's answer did not fit: briefs.0.subject: Field required; tried twice")
    assert meter.calls == 2 and len(llm.calls) == 2


def test_text_that_is_not_json_is_a_misfit_too() -> None:
    llm = ScriptedChatModel(replies=["Sure! Here are four shots: hero, lifestyle…", "still not json"])
    meter = Meter("plan")
    with pytest.raises(StructuredOutputError, match=r"did not fit: it was not valid JSON \(.+\); tried twice"):
        asyncio.run(call_structured(llm, Plan, [SystemMessage("plan"), HumanMessage("a cup")], meter))
    assert meter.calls == 2
    assert "not valid JSON" in str(llm.calls[1][-1].content)


def test_an_answer_that_fits_costs_one_call() -> None:
    llm = ScriptedChatModel(replies=[SHOWCASE])
    meter = Meter("plan")
    assert asyncio.run(plan_request(llm, "a cup", meter)).briefs[0].purpose == "hero"
    assert meter.calls == 1 and len(llm.calls) == 1
