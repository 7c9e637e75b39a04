"""Start-up of a command: it imports only the area of the command line that adds it
(``tallyflow.cli.main``'s COMMANDS; every other command line, and ``app``, has every area),
and ``ingest`` runs its imports with the cycle collector off (``start_up_done``)."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys

import typer
from typer.testing import CliRunner

from tallyflow.cli.main import AREAS, COMMANDS, app, build_app, command_name


def _added_by(area: str) -> set[str]:
    root = typer.Typer()
    module = importlib.import_module(f"tallyflow.cli.{area}")
    if area == "db":
        root.add_typer(module.app, name="db")
    else:
        module.register(root)
    names = [c.name for c in root.registered_commands] + [g.name for g in root.registered_groups]
    assert all(names), f"{area} adds a command without an explicit name"
    return {str(n) for n in names}


def test_commands_names_exactly_what_each_area_adds() -> None:
    found = {name: area for area in AREAS for name in _added_by(area)}
    assert found == COMMANDS


def test_the_command_name_is_the_first_word_that_is_not_an_option() -> None:
    assert command_name(["--debug", "ingest", "x", "--json"]) == "ingest"
    assert command_name(["ingest", "--help"]) == "ingest"
    assert command_name(["--help"]) is None
    assert command_name([]) is None
    assert command_name(["--", "ingest"]) is None


def test_one_command_has_its_own_area_and_the_root_options() -> None:
    runner = CliRunner()
    full = runner.invoke(app, ["--help"])
    assert full.exit_code == 0
    for name in COMMANDS:
        assert name in full.output
    one = build_app("rejects")
    assert {g.name for g in one.registered_groups} == {"rejects", "sources", "mappings"}
    assert [c.name for c in one.registered_commands] == ["ingest", "reingest"]
    # the same help and errors as the whole command line
    for args in (["ingest", "--help"], ["ingest"], ["--debug", "sources", "--help"]):
        assert runner.invoke(build_app(command_name(args)), args).output == \
            runner.invoke(app, args).output
    # an unknown word gets every area, so the usual "No such command" and its usage
    typo = runner.invoke(build_app(command_name(["ingset"])), ["ingset"])
    assert typo.exit_code == 2 and "No such command" in typo.output
    assert typo.output == runner.invoke(app, ["ingset"]).output


def test_ingest_does_not_import_the_other_areas() -> None:
    code = ("import sys\n"
            "from tallyflow.cli.main import build_app\n"
            "build_app('ingest')\n"
            "print(sorted(m for m in sys.modules if m.startswith('tallyflow.cli.')))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    loaded = ast.literal_eval(done.stdout)
    assert "tallyflow.cli.ingest" in loaded
    assert not {"tallyflow.cli.demo", "tallyflow.cli.api", "tallyflow.cli.invoices"} & set(loaded)


def _in_child(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    return done.stdout.strip().splitlines()[-1]


def test_ingest_starts_with_the_cycle_collector_off_other_commands_do_not() -> None:
    code = ("import atexit, gc, sys\n"
            "atexit.register(lambda: print(gc.isenabled()))\n"
            "from tallyflow.cli.main import main\n"
            "sys.argv = ['tallyflow', *{args!r}]\n"
            "main()\n")
    assert _in_child(code.format(args=["ingest", "--help"])) == "False"
    assert _in_child(code.format(args=["--debug", "ingest", "--help"])) == "False"
    assert _in_child(code.format(args=["status", "--help"])) == "True"
    assert _in_child(code.format(args=["--help"])) == "True"


def test_start_up_done_freezes_and_collects_again_only_after_an_off_start() -> None:
    code = ("import gc\n"
            "from tallyflow.cli.common import start_up_done\n"
            "{setup}\n"
            "start_up_done()\n"
            "print(gc.isenabled(), gc.get_freeze_count() > 0)\n")
    assert _in_child(code.format(setup="gc.disable()")) == "True True"
    assert _in_child(code.format(setup="")) == "True False"  # on: nothing set aside
