"""One ``APIRouter`` per resource; ``tallyflow.api.app`` includes them all (ROUTERS).

A router imports the shared modules of ``tallyflow.api`` (deps, lago, objects, documents,
schemas), never another router (tests/tallyflow/api/test_structure.py).
"""
