"""Intake: turn batch files and a watched drop-zone folder into ledger jobs, exactly once."""
