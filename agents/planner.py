"""Planner: breaks a request into image briefs (a product showcase: hero, lifestyle, detail, thumbnail)."""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel, Field
from pydantic.json_schema import SkipJsonSchema

from atelier.agents.image_prompt import PictureBrief
from atelier.agents.llm import Meter, call_structured
from atelier.agents.prompts import PLANNER_SYSTEM

__all__ = ["Brief", "Plan", "plan_request"]


class Brief(BaseModel):
    """One image to make: what it is for, what it shows, and how."""

    purpose: str = Field(..., description="hero, lifestyle, detail, thumbnail, illustration, …")
    subject: str = Field(..., min_length=1, description="What is in the picture.")
    notes: str = Field("", description="Light, setting, composition.")
    # What an illustrated answer's own call described (agents/illustrated_answer.py); not asked of the planner.
    picture: SkipJsonSchema[PictureBrief | None] = None

    @classmethod
    def of_picture(cls, purpose: str, picture: PictureBrief) -> Brief:
        """The brief for a described picture (its setting and mood as the notes library prompts read)."""
        notes = ", ".join(part for part in (picture.setting, picture.mood) if part)
        return cls(purpose=purpose, subject=picture.subject, notes=notes, picture=picture)


class Plan(BaseModel):
    """The planner's answer."""

    briefs: list[Brief] = Field(..., min_length=1, max_length=12)


async def plan_request(llm: BaseChatModel, request: str, meter: Meter) -> Plan:
    """One structured call: the briefs for a request."""
    messages = [SystemMessage(PLANNER_SYSTEM), HumanMessage(request)]
    return await call_structured(llm, Plan, messages, meter)
