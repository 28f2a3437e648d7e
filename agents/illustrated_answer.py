"""An illustrated answer in ONE LLM call: the answer, then a delimited picture description the node splits off.

The model is asked (prompts.PICTURE_BLOCK) to end its answer with

    [picture]
    subject: a giant panda chewing bamboo
    setting: in a misty bamboo forest
    mood: quiet, soft diffuse light
    [/picture]

`PictureSplittingModel` wraps the chat model: what it streams and returns is the answer alone (the block is held
back as it arrives, so a chat that shows tokens never shows it) and the block rides in
`additional_kwargs[PICTURE_KEY]`; `answer_with_picture` parses it into a `PictureBrief` for the designer.

Why a delimited block, not structured output: with small local models through langchain-ollama, structured output
(`format=<JSON schema>`) makes the whole reply JSON — the answer can no longer stream as prose, small models write
stiffer, shorter prose inside JSON strings, and a reply that does not validate loses the answer as well as the
picture. A few labelled lines after the answer are the format small models follow most reliably, and parsing them
is forgiving: any case, markdown bold or bullets, "Picture:" on its own line, a missing closing tag, labelled
lines without the opening tag, or free text inside the tags (taken as the subject). When the model leaves the
block out altogether, the answer is still whole and the picture is described from the answer's first sentences
and what the person asked to see (`fallback_picture`); nothing is reported as broken.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import RunnableConfig
from langgraph.constants import TAG_NOSTREAM

from atelier.agents.image_prompt import PictureBrief
from atelier.agents.llm import Meter, call_llm
from atelier.agents.prompts import ILLUSTRATED_ANSWER_SYSTEM
from atelier.tools.errors import AtelierError

__all__ = ["PICTURE_KEY", "BlockSplitter", "IllustratedAnswer", "PictureSplittingModel", "answer_with_picture",
           "fallback_picture", "parse_block", "split_picture"]

log = logging.getLogger(__name__)

PICTURE_KEY = "picture_block"
FALLBACK_SENTENCES, FALLBACK_CHARS = 2, 200  # the most of the answer a fallback picture description takes
# "[picture]" / "<picture>" anywhere; "Picture:" or "**Picture description**" alone on a line; "[/picture]".
_OPEN = re.compile(r"[\[<]\s*picture\b[^\]>\n]*[\]>]?", re.I)
_BARE_OPEN = re.compile(r"^[\s*_#>`-]*picture(\s+description)?[\s*_]*:?[\s*_]*$", re.I)
_CLOSE = re.compile(r"[\[<]\s*/\s*picture\s*[\]>]", re.I)
_KEY = re.compile(r"^[\s*_>#`-]*(subject|setting|scene|place|location|background|mood|atmosphere|lighting|light)"
                  r"[\s*_]*:[\s*_]*(.*)$", re.I)
_FIELD = {"subject": "subject", "setting": "setting", "scene": "setting", "place": "setting",
          "location": "setting", "background": "setting", "mood": "mood", "atmosphere": "mood",
          "lighting": "mood", "light": "mood"}
_OPEN_PREFIXES = ("[picture", "<picture")
_MARKUP = " \t*_#>`-"  # markdown a small model may wrap the tag or the labels in
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_QUIET: RunnableConfig = {"tags": [TAG_NOSTREAM]}  # the wrapped model's own tokens (with the block) never stream


class BlockSplitter:
    """Splits streamed text into what the person reads and the picture block, holding back what may open one."""

    def __init__(self) -> None:
        """Nothing seen yet."""
        self._pending = ""  # visible text not yet released (it may open a block)
        self._at_line_start = True  # whether the pending text starts a line (all shown so far ends one)
        self._last_shown = ""  # the last character shown
        self._inside = False
        self._closed = False
        self._closing_markup = True  # right after the closing tag: markup that wraps it is dropped
        self.block: str | None = None  # the block's text (without its delimiters) once one opened

    def feed(self, text: str) -> str:
        """Take the next piece of the reply; return the text that can be shown now."""
        if self._inside:
            return self._into_block(text)
        if self._closed:
            return self._after_block(text)
        self._pending += text
        start = self._opening()
        if start is None:
            keep = self._held()
            shown, self._pending = self._pending[:len(self._pending) - keep], self._pending[len(self._pending) - keep:]
            if shown:
                self._at_line_start, self._last_shown = shown.endswith("\n"), shown[-1]
            return shown
        shown, rest = self._pending[:start], self._pending[start:]
        self._pending, self._inside, self.block = "", True, ""
        first, _, after = rest.partition("\n")
        if _BARE_OPEN.match(first):
            rest = after
        else:
            rest = _OPEN.sub("", rest, count=1)
        return shown + self._into_block(rest)

    def finish(self) -> str:
        """The end of the reply: the text still held back (when it opened no block)."""
        shown, self._pending = self._pending, ""
        return shown

    def _into_block(self, text: str) -> str:
        """Add `text` to the block; after its closing tag, the rest is shown again."""
        assert self.block is not None
        self.block += text
        end = _CLOSE.search(self.block)
        if end is None:
            return ""
        self.block, rest = self.block[:end.start()], self.block[end.end():]
        self._inside, self._closed = False, True
        return self._after_block(rest)

    def _after_block(self, text: str) -> str:
        """Text after the closing tag, without the markup that closed it ('[/picture]**')."""
        if self._closing_markup:
            shown = text.lstrip("*_`")
            self._closing_markup = not shown
            return shown
        return text

    def _opening(self) -> int | None:
        """Where a block opens in the pending text: a finished '[picture]' tag anywhere, or a 'Picture:' line."""
        found = []
        for tag in _OPEN.finditer(self._pending):
            if (self._pending[tag.start() - 1] if tag.start() else self._last_shown) == "`":
                continue  # `<picture>` quoted in the answer (the HTML element) opens nothing
            if tag.group(0).endswith(("]", ">")) or tag.end() < len(self._pending):
                line_start = self._pending.rfind("\n", 0, tag.start()) + 1
                whole_line = line_start > 0 or self._at_line_start
                before = self._pending[line_start:tag.start()]
                found.append(line_start if whole_line and not before.strip(_MARKUP) else tag.start())  # '**[picture]'
            break
        offset = 0
        for number, line in enumerate(self._pending.split("\n")[:-1]):  # finished lines only
            if (number > 0 or self._at_line_start) and _BARE_OPEN.match(line):
                found.append(offset)
                break
            offset += len(line) + 1
        return min(found) if found else None

    def _held(self) -> int:
        """How many trailing characters to hold back: an unfinished line that may become 'Picture:', or what may
        become a '[picture' tag."""
        line = self._pending.rsplit("\n", 1)[-1]
        bare = line.lstrip(_MARKUP + "[<").lower()
        whole_line = self._at_line_start or "\n" in self._pending
        if whole_line and (not bare or "picture description".startswith(bare) or bare.startswith("picture")):
            return len(line)
        for size in range(min(len(self._pending), 24), 0, -1):
            tail = self._pending[-size:].lower().replace(" ", "")
            if tail[:1] in ("[", "<") and any(opening.startswith(tail) for opening in _OPEN_PREFIXES):
                return size
        return 0


def parse_block(block: str) -> PictureBrief | None:
    """The picture a block describes: its labelled lines, else its free text as the subject; None when empty."""
    fields: dict[str, list[str]] = {"subject": [], "setting": [], "mood": []}
    free: list[str] = []
    for line in block.splitlines():
        if line.strip().startswith("```"):
            continue
        match = _KEY.match(line)
        if match and match.group(2).strip():
            fields[_FIELD[match.group(1).lower()]].append(match.group(2).strip())
        elif line.strip(" \t*_-"):
            free.append(line.strip(" \t*_-"))
    if fields["subject"]:
        return PictureBrief.of(", ".join(fields["subject"]), ", ".join(fields["setting"]), ", ".join(fields["mood"]))
    if free:
        return PictureBrief.of(" ".join(free))
    return None


def split_picture(text: str) -> tuple[str, PictureBrief | None]:
    """A whole reply split into the answer and its picture (None when it has no usable block)."""
    splitter = BlockSplitter()
    answer = splitter.feed(text) + splitter.finish()
    picture = parse_block(splitter.block) if splitter.block is not None else None
    if splitter.block is None:
        answer, picture = _trailing_labels(answer)
    return _tidy(answer), picture


def _trailing_labels(answer: str) -> tuple[str, PictureBrief | None]:
    """Labelled 'subject:/setting:/mood:' lines at the end of an answer without the opening tag, split off."""
    lines = answer.rstrip().split("\n")
    cut = len(lines)
    while cut > 0 and (not lines[cut - 1].strip() or _KEY.match(lines[cut - 1])
                       or lines[cut - 1].strip().startswith("```")):
        cut -= 1
    tail = "\n".join(lines[cut:])
    picture = parse_block(tail) if any((m := _KEY.match(line)) and m.group(1).lower() == "subject"
                                       for line in lines[cut:]) else None
    return ("\n".join(lines[:cut]), picture) if picture is not None else (answer, None)


def _tidy(answer: str) -> str:
    """The answer without what the block left behind: trailing fences, rules and blank lines."""
    lines = answer.rstrip().split("\n")
    while lines and not lines[-1].strip(_MARKUP):
        lines.pop()
    return "\n".join(lines).strip()


def fallback_picture(answer: str, subject: str) -> PictureBrief:
    """A picture described from what the person asked to see and the answer's first sentences (AtelierError when
    both are empty)."""
    opening = ""
    for sentence in _SENTENCE_END.split(" ".join(answer.split()))[:FALLBACK_SENTENCES]:
        if opening and len(opening) + len(sentence) >= FALLBACK_CHARS:
            break
        opening = f"{opening} {sentence}".strip()
    if len(opening) > FALLBACK_CHARS:
        opening = opening[:FALLBACK_CHARS].rsplit(" ", 1)[0]
    if subject.strip():
        return PictureBrief.of(subject, opening)
    if opening:
        return PictureBrief.of(opening)
    raise AtelierError("there is nothing to illustrate: the request and the answer are empty; say what to show")


class PictureSplittingModel(BaseChatModel):
    """Answers with `inner`; streams and returns the answer alone, the picture block in additional_kwargs."""

    inner: BaseChatModel
    model: str | None = None
    base_url: str | None = None

    @classmethod
    def around(cls, llm: BaseChatModel) -> PictureSplittingModel:
        """`llm` wrapped: it streams when `llm` does, and keeps its model name and URL for agents/llm.py's errors."""
        streams = type(llm)._astream is not BaseChatModel._astream or type(llm)._stream is not BaseChatModel._stream
        return cls(inner=llm, model=getattr(llm, "model", None), base_url=getattr(llm, "base_url", None),
                   disable_streaming=llm.disable_streaming if streams else True)

    @property
    def _llm_type(self) -> str:
        """LangChain's type tag."""
        return "picture-splitting"

    def _result(self, reply: BaseMessage) -> ChatResult:
        """The inner model's whole reply as the answer alone (the block in additional_kwargs)."""
        splitter = BlockSplitter()
        shown = splitter.feed(_text(reply)) + splitter.finish()
        extra = {PICTURE_KEY: splitter.block} if splitter.block is not None else {}
        message = AIMessage(content=shown, additional_kwargs=extra, response_metadata=reply.response_metadata,
                            usage_metadata=getattr(reply, "usage_metadata", None))
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        """One call to the inner model, split."""
        return self._result(self.inner.invoke(messages, _QUIET, stop=stop, **kwargs))

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        """One call to the inner model, split."""
        return self._result(await self.inner.ainvoke(messages, _QUIET, stop=stop, **kwargs))

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        """The inner model's stream with the picture block held back; the block arrives in the last chunk."""
        splitter = BlockSplitter()
        async for chunk in self.inner.astream(messages, _QUIET, stop=stop, **kwargs):
            yield ChatGenerationChunk(message=AIMessageChunk(
                content=splitter.feed(_text(chunk)), response_metadata=chunk.response_metadata,
                usage_metadata=getattr(chunk, "usage_metadata", None)))
        extra = {PICTURE_KEY: splitter.block} if splitter.block is not None else {}
        yield ChatGenerationChunk(message=AIMessageChunk(content=splitter.finish(), additional_kwargs=extra))


@dataclass(frozen=True)
class IllustratedAnswer:
    """The answer a person reads and the picture that goes with it."""

    reply: AIMessage
    picture: PictureBrief
    described: bool  # the model described the picture (False: built from the answer by `fallback_picture`)


def _text(message: BaseMessage) -> str:
    """A message's text content."""
    return message.content if isinstance(message.content, str) else str(message.content)


async def answer_with_picture(llm: BaseChatModel, messages: Sequence[BaseMessage], subject: str,
                              meter: Meter, *, system: str = ILLUSTRATED_ANSWER_SYSTEM) -> IllustratedAnswer:
    """One LLM call: the answer to the conversation and the picture for it (`subject`: what the person asked to see,
    used only when the model describes no picture; `system`: the instructions, ending with prompts.PICTURE_BLOCK)."""
    reply = await call_llm(PictureSplittingModel.around(llm), [SystemMessage(system), *messages], meter)
    block = reply.additional_kwargs.get(PICTURE_KEY)
    if isinstance(block, str):
        answer, picture = _tidy(_text(reply)), parse_block(block)
    else:  # no tag: labelled lines at its end, or no description at all
        answer, picture = split_picture(_text(reply))
    described = picture is not None
    if picture is None:
        log.info("the answer described no picture; describing it from the answer and the request")
        picture = fallback_picture(answer, subject)
    if not answer:  # the model wrote only the description
        answer = f"Here is a picture of {picture.subject}."
    kept = {key: value for key, value in reply.additional_kwargs.items() if key != PICTURE_KEY}
    shown = reply.model_copy(update={"content": answer, "additional_kwargs": kept})
    return IllustratedAnswer(reply=shown, picture=picture, described=described)
