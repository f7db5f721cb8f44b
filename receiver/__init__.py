"""The web service, settings and CLI."""
