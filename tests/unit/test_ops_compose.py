"""docker-compose.yml stays consistent with the CLI and the settings it names."""

from __future__ import annotations

from typing import Any

import typer
import yaml

from adapter.cli import app
from adapter.settings import Settings
from tests.conftest import REPO


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return loaded


def test_every_command_parses_and_every_variable_is_known() -> None:
    """Each service's bookme-crm command line parses; its variables are settings we read."""
    services = compose()["services"]
    assert services["api"]["deploy"]["replicas"] == 2
    assert services["worker"]["deploy"]["replicas"] == 2
    known = {name.upper() for name in Settings.model_fields}
    cli = typer.main.get_command(app)
    for name in ("migrate", "api", "worker"):
        service = services[name]
        program, command, *args = service["command"]
        assert program == "bookme-crm"
        sub = cli.commands[command]  # type: ignore[attr-defined]
        sub.make_context(command, list(args))  # raises on an unknown option or bad value
        assert set(service["environment"]) <= known, name
    assert services["api"]["command"][2] == "--no-worker"
    assert services["worker"]["command"][2:] == ["--concurrency", "4"]
