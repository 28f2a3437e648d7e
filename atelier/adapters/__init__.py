"""Thin wrappers that expose tools.toolkit's ToolSpecs to LangChain, MCP, CrewAI and AutoGen."""
