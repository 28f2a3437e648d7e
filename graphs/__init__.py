"""LangGraph graphs that wire Atelier's agents and tools together."""
