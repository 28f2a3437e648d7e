"""The copywriter with a scripted model: one call for the whole set, and brief-made words (said so) otherwise."""

from __future__ import annotations

import pytest
from langchain_ollama import ChatOllama

from atelier.agents.copywriter import Shot, brief_copy, write_copy
from atelier.agents.llm import Meter
from tests.fakes.chat_model import ScriptedChatModel

pytestmark = pytest.mark.asyncio

SHOTS = [Shot(1, "hero", "a copper cup", "walnut table"), Shot(2, "lifestyle", "the cup in a cafe"),
         Shot(4, "thumbnail", "the cup")]


def _copy(*numbers: int) -> dict[str, object]:
    return {"headline": "Copper, warm", "images": [{"image": n, "caption": f"Caption {n}",
                                                    "marketing_copy": f"Copy {n}."} for n in numbers]}


async def test_one_call_writes_every_caption_and_the_headline() -> None:
    llm = ScriptedChatModel(replies=[_copy(1, 2, 4)])
    meter = Meter("captions")
    result = await write_copy(llm, "Our copper cup", SHOTS, meter)
    assert meter.calls == 1 and len(llm.calls) == 1
    assert result.headline == "Copper, warm" and result.note == ""
    assert {n: c.caption for n, c in result.by_number.items()} == {1: "Caption 1", 2: "Caption 2", 4: "Caption 4"}
    asked = str(llm.calls[0][-1].content)
    assert asked.startswith("Product brief:\nOur copper cup\n\nImages:\n1. hero: a copper cup (walnut table)")
    assert "4. thumbnail: the cup" in asked


async def test_images_the_answer_leaves_out_get_words_from_their_briefs() -> None:
    result = await write_copy(ScriptedChatModel(replies=[_copy(1, 9, 1)]), "cup", SHOTS, Meter("captions"))
    assert result.written_by == {1: "model", 2: "brief", 4: "brief"}
    assert result.by_number[2] == brief_copy(SHOTS[1])
    assert result.note == ("Captions and copy of image(s) 2, 4 come from their briefs: the model's answer left them "
                           "out.")


async def test_an_answer_that_does_not_fit_is_survived() -> None:
    misfit = {"headline": "", "images": "none"}
    llm = ScriptedChatModel(replies=[misfit, misfit])  # the answer and the one retry both miss the schema
    result = await write_copy(llm, "A cup for espresso lovers", SHOTS, Meter("captions"))
    assert len(llm.calls) == 2
    assert set(result.written_by.values()) == {"brief"} and result.headline == "A cup for espresso lovers"
    assert result.note.startswith("Captions and copy come from the shot briefs: the copywriter model could not write "
                                  "them (its answer did not fit")
    assert result.by_number[1].caption == "A copper cup"
    assert result.by_number[1].marketing_copy == "Hero image: a copper cup (walnut table)."


async def test_ollama_down_is_said_and_survived(closed_port_url: str) -> None:
    llm = ChatOllama(model="llama3.2", base_url=closed_port_url)
    result = await write_copy(llm, "cup", SHOTS[:1], Meter("captions"))
    assert set(result.written_by.values()) == {"brief"} and "unreachable" in result.note


async def test_no_shots_no_call() -> None:
    llm = ScriptedChatModel(replies=[])
    result = await write_copy(llm, "cup", [], Meter("captions"))
    assert llm.calls == [] and result.by_number == {}
