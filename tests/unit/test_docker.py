"""docker/: no image is built here (base images cannot be pulled), so the files are checked
statically: every command and option they run exists in the `facelens` CLI or the `mlflow`
CLI, every published port is the one the command listens on, and every environment variable
and port they use is documented in the README (MLproject entry points are checked once an
MLproject exists at the top level)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import typer.main
import yaml

from facelens.cli.app import app

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
README = (REPO / "README.md").read_text()
COMPOSE = yaml.safe_load((DOCKER / "compose.yaml").read_text())
#: Variables read by third-party images or tools, not by facelens.
_FOREIGN_ENV = {
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "POSTGRES_DB",
    "PIP_NO_CACHE_DIR",
    "PYTHONUNBUFFERED",
    "MPLBACKEND",
}


def _dockerfiles() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(DOCKER.glob("*Dockerfile"))}


def _instruction(text: str, name: str) -> list[str] | None:
    found = re.findall(rf"^{name}\s+(\[.*\])\s*$", text, flags=re.M)
    return json.loads(found[-1]) if found else None


def _mlflow_cli():
    from mlflow.cli import cli

    return cli


def _check_command(argv: list[str]) -> None:
    """``argv`` resolves to a command of its CLI and every ``--option`` it passes exists."""
    if argv[:2] == ["sh", "-c"]:
        argv = shlex.split(argv[2].removeprefix("exec "))
    program, *args = argv
    root = {"facelens": typer.main.get_command(app), "mlflow": _mlflow_cli()}[program]
    command = root
    while hasattr(command, "commands") and args and not args[0].startswith("-"):
        assert args[0] in command.commands, f"{program}: no command {args[0]!r}"
        command = command.commands[args.pop(0)]
    known = {opt for p in command.params for opt in getattr(p, "opts", [])}
    for arg in args:
        if arg.startswith("--"):
            assert arg in known, f"{' '.join(argv[:3])}: no option {arg}"


def _service_argv(service: dict, dockerfile_entry: list[str]) -> list[str]:
    entry = service.get("entrypoint", dockerfile_entry)
    return [*entry, *service.get("command", [])]


def test_dockerfiles_run_existing_commands() -> None:
    files = _dockerfiles()
    assert {"Dockerfile", "serve.Dockerfile"} <= set(files)
    worker = files["Dockerfile"]
    _check_command([*_instruction(worker, "ENTRYPOINT"), *_instruction(worker, "CMD")])
    _check_command(_instruction(files["serve.Dockerfile"], "ENTRYPOINT"))
    assert "ARG TORCH_INDEX" in worker  # CUDA through a build argument


@pytest.mark.parametrize("name", ["mlflow", "tune-worker", "serve"])
def test_compose_services_run_existing_commands(name: str) -> None:
    service = COMPOSE["services"][name]
    image = {"facelens:latest": "Dockerfile", "facelens-serve:latest": "serve.Dockerfile"}
    text = _dockerfiles()[image[service["image"]]]
    entry = _instruction(text, "ENTRYPOINT") or []
    argv = _service_argv(service, entry)
    if "command" not in service and _instruction(text, "CMD"):
        argv += _instruction(text, "CMD")
    _check_command(argv)


def test_published_ports_are_the_ones_served_and_documented() -> None:
    files = _dockerfiles()
    for name, service in COMPOSE["services"].items():
        for mapping in service.get("ports", []):
            inside = mapping.split(":")[-1]
            text = " ".join(service.get("command", [])) or files["serve.Dockerfile"]
            assert f"--port {inside}" in text or f'--port", "{inside}' in text, name
            assert f":{inside}" in README, f"README does not mention port {inside} ({name})"


def test_environment_variables_exist_and_are_documented() -> None:
    used: set[str] = set()
    for service in COMPOSE["services"].values():
        used |= set(service.get("environment", {}))
    for text in _dockerfiles().values():
        used |= set(re.findall(r"^ENV\s+(\w+)", text, flags=re.M))
        used |= set(re.findall(r"\s(\w+)=", " ".join(re.findall(r"^ENV .*$", text, flags=re.M))))
    worker = typer.main.get_command(app).commands["tune"].commands["worker"]
    envvars = {p.envvar for p in worker.params if getattr(p, "envvar", None)}
    assert "FACELENS_TUNE_STORAGE" in envvars
    for var in sorted(used - _FOREIGN_ENV):
        assert var in README, f"README does not document {var}"


def test_mlproject_entry_points() -> None:
    mlproject = REPO / "MLproject"
    if not mlproject.exists():
        pytest.skip("no MLproject on this branch yet (branch mlproject adds it)")
    entry_points = yaml.safe_load(mlproject.read_text()).get("entry_points", {})
    assert entry_points, "MLproject has no entry points"
