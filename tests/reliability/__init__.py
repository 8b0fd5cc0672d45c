"""Hostile-but-fair inputs through the CLI and the API: each test asserts one specific outcome."""
