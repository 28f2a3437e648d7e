"""Accounts: users with roles, hashed API keys, JWT access tokens and per-user quotas."""
