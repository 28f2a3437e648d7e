"""One call answers and describes the picture: the block is split off whole or streamed, in the forms small models
write it, and never reaches the person; without it, the picture is described from the answer and the request."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage

from atelier.agents.illustrated_answer import (
    PICTURE_KEY,
    BlockSplitter,
    PictureSplittingModel,
    answer_with_picture,
    fallback_picture,
    parse_block,
    split_picture,
)
from atelier.agents.image_prompt import PictureBrief
from atelier.agents.llm import Meter
from atelier.agents.prompts import ILLUSTRATED_ANSWER_SYSTEM
from atelier.tools.errors import AtelierError
from tests.fakes.chat_model import ScriptedChatModel, StreamingScriptedChatModel

ANSWER = "Herons are wading birds that eat fish and frogs."
HERON = PictureBrief(subject="a grey heron catching a fish", setting="in shallow water", mood="calm, morning light")

FORMS = {
    "as asked": f"{ANSWER}\n\n[picture]\nsubject: a grey heron catching a fish\nsetting: in shallow water\n"
                "mood: calm, morning light\n[/picture]",
    "bold tag, capitals": f"{ANSWER}\n\n**[Picture]**\nSubject: a grey heron catching a fish\n"
                          "Setting: in shallow water\nMood: calm, morning light\n**[/Picture]**",
    "markdown heading and bullets": f"{ANSWER}\n\n### Picture description\n- **Subject:** a grey heron catching a "
                                    "fish\n- **Setting:** in shallow water\n- **Mood:** calm, morning light",
    "in a code fence, not closed": f"{ANSWER}\n```\n[picture]\nsubject: a grey heron catching a fish\n"
                                   "setting: in shallow water\nmood: calm, morning light\n```",
    "on the answer's line": f"{ANSWER} [PICTURE] subject: a grey heron catching a fish\nsetting: in shallow water\n"
                            "atmosphere: calm, morning light [/PICTURE]",
    "labels without the tag": f"{ANSWER}\n\nsubject: a grey heron catching a fish\nsetting: in shallow water\n"
                              "mood: calm, morning light",
}


@pytest.mark.parametrize("form", FORMS)
def test_the_block_is_split_off_in_the_forms_small_models_write(form: str) -> None:
    answer, picture = split_picture(FORMS[form])
    assert answer == ANSWER and picture == HERON


@pytest.mark.parametrize("form", [f for f in FORMS if f != "labels without the tag"])
@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_streamed_in_any_pieces_the_person_sees_the_same_answer_and_never_the_block(form: str, size: int) -> None:
    text = FORMS[form]
    splitter = BlockSplitter()
    pieces = [splitter.feed(text[i:i + size]) for i in range(0, len(text), size)] + [splitter.finish()]
    shown = "".join(pieces)
    assert shown.strip(" \n*`") == ANSWER, shown
    assert "picture" not in shown.lower() and "subject" not in shown.lower()
    assert splitter.block is not None and parse_block(splitter.block) == HERON


def test_text_that_only_looks_like_a_tag_is_shown() -> None:
    for text in ("Pictures of herons are common.", "Use the [pic] tag, or <b>bold</b>.", "A list:\n- picture frames",
                 "Serve responsive images with the `<picture>` element."):
        assert split_picture(text) == (text, None)
        splitter = BlockSplitter()
        assert "".join(splitter.feed(char) for char in text) + splitter.finish() == text
    answer, picture = split_picture(f"{ANSWER}\n[picture]\nA heron spearing a fish at dawn\n[/picture]")
    assert answer == ANSWER and picture == PictureBrief(subject="A heron spearing a fish at dawn")


def test_without_a_block_the_picture_comes_from_the_request_and_the_answers_first_sentences() -> None:
    picture = fallback_picture(f"{ANSWER} They hunt by standing still in shallow water. " + "More. " * 60,
                               "what herons eat")
    assert picture.subject == "what herons eat"
    assert picture.setting == f"{ANSWER} They hunt by standing still in shallow water."
    assert fallback_picture("One long sentence " * 30, "").subject.startswith("One long sentence")
    with pytest.raises(AtelierError, match="nothing to illustrate"):
        fallback_picture("", " ")


@pytest.mark.asyncio
async def test_one_call_answers_and_describes_the_picture() -> None:
    llm = ScriptedChatModel(replies=[FORMS["as asked"]])
    meter = Meter("answer")
    made = await answer_with_picture(llm, [HumanMessage("Show me what herons eat")], "what herons eat", meter)
    assert made.reply.content == ANSWER and made.picture == HERON and made.described
    assert PICTURE_KEY not in made.reply.additional_kwargs
    assert len(llm.calls) == 1 and meter.calls == 1 and meter.output_tokens > 0
    assert llm.calls[0][0].content == ILLUSTRATED_ANSWER_SYSTEM


@pytest.mark.asyncio
async def test_a_reply_without_the_block_keeps_its_answer_and_still_gets_a_picture() -> None:
    llm = ScriptedChatModel(replies=[ANSWER])
    made = await answer_with_picture(llm, [HumanMessage("Show me what herons eat")], "what herons eat", Meter("a"))
    assert made.reply.content == ANSWER and not made.described
    assert made.picture == PictureBrief(subject="what herons eat", setting=ANSWER)
    only_block = ScriptedChatModel(replies=["[picture]\nsubject: a heron\n[/picture]"])
    bare = await answer_with_picture(only_block, [HumanMessage("Show me a heron")], "a heron", Meter("a"))
    assert bare.reply.content == "Here is a picture of a heron." and bare.described


@pytest.mark.asyncio
async def test_the_wrapper_streams_the_answer_alone_and_carries_the_block() -> None:
    llm = StreamingScriptedChatModel(replies=[FORMS["bold tag, capitals"]], chunk_chars=2)
    wrapper = PictureSplittingModel.around(llm)
    chunks = [chunk async for chunk in wrapper.astream([HumanMessage("Show me what herons eat")])]
    shown = "".join(str(c.content) for c in chunks)
    assert shown.strip() == ANSWER and len(chunks) > 10
    total = chunks[0]
    for chunk in chunks[1:]:
        total += chunk
    assert isinstance(total, AIMessageChunk) and parse_block(total.additional_kwargs[PICTURE_KEY]) == HERON
    assert total.usage_metadata is not None and total.usage_metadata["output_tokens"] > 0
    assert len(llm.calls) == 1
    assert PictureSplittingModel.around(ScriptedChatModel()).disable_streaming is True, (
        "a model that cannot stream is not made to")
