"""MCP: Atelier's tools for coding assistants (official SDK), over stdio and streamable HTTP."""
