"""Command groups of the ``tallyflow`` CLI, one module each, registered in ``tallyflow.cli``."""
