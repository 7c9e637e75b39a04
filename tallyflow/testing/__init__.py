"""What Tallyflow ships for testing plugins: the conformance suite (``conformance``), a pytest
plugin a source or mapping package runs against an installed Tallyflow (docs/ingest.md,
"Adding a source")."""
