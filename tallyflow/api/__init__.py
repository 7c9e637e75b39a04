"""The Lago-compatible HTTP API (`tallyflow api`): an entry point beside the command line.

Nothing in models/, tasks/ or flows/ imports it; it calls tasks as the CLI does.
"""
