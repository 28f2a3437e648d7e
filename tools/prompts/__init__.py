"""The prompt library: versioned, sandboxed Jinja2 prompts with usage and ratings, and A/B tests over them."""
