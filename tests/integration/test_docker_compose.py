"""docker-compose.yaml and the Dockerfile, checked statically: no Docker engine runs here or in CI.

What is checked is what would otherwise only fail at `docker compose up`: commands, mounts, the
secrets backend's file path, the local stack's flags and connections, and service dependencies.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib
import inspect
import json
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.requirements import Requirement

from aporia_local import cli
from aporia_local.stack import LocalStack, StackSettings
from aporia_provider.extraction.spark import POSTGRES_JDBC_JAR

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
# Long-running Airflow services and the `airflow` sub-command each runs.
AIRFLOW_COMMANDS = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
}
AIRFLOW_SERVICES = ("airflow-init", *AIRFLOW_COMMANDS)
# The services that run tasks or triggers, and so read connections while working.
TASK_RUNNERS = ("airflow-scheduler", "airflow-triggerer")
STACK_SERVICE = "local-stack"
SPARK_CONNECT_SERVICE = "spark-connect"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """Short-syntax volumes as {container path: (source, read_only)}."""
    found = {}
    for volume in service.get("volumes", []):
        source, target, *mode = volume.split(":")
        found[target] = (source, mode == ["ro"])
    return found


def stack_args(services: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The local stack's `aporia-local up` options, as {flag: value}."""
    return cli_options(services[STACK_SERVICE]["command"], "up")


def spark_connect_args(services: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The Spark Connect service's `aporia-local serve-spark-connect` options, as {flag: value}."""
    return cli_options(services[SPARK_CONNECT_SERVICE]["command"], "serve-spark-connect")


def cli_options(command: list[str], sub_command: str) -> dict[str, str]:
    assert command[:2] == ["aporia-local", sub_command]
    options = command[2:]
    assert all(flag.startswith("--") for flag in options[::2]), options
    return dict(zip(options[::2], options[1::2], strict=True))


def assert_the_cli_accepts(command: list[str]) -> None:
    """Every flag of an `aporia-local` command is one its sub-command accepts, with a valid value."""
    # argparse handles the options in order, so the values are converted (ints, say) before --help
    # prints the sub-command's usage and exits 0; an unknown flag is caught against that usage.
    result = subprocess.run(
        [sys.executable, "-m", cli.__name__, *command[1:], "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: aporia-local {command[1]}")
    accepted = {word.strip("[],") for word in result.stdout.split() if word.startswith(("--", "[--"))}
    assert {word for word in command[2:] if word.startswith("--")} <= accepted


def secrets_file(service: dict[str, Any]) -> PurePosixPath:
    env = service["environment"]
    assert env["AIRFLOW__SECRETS__BACKEND"] == "airflow.secrets.local_filesystem.LocalFilesystemBackend"
    return PurePosixPath(json.loads(env["AIRFLOW__SECRETS__BACKEND_KWARGS"])["connections_file_path"])


def test_the_stack_has_exactly_the_expected_services(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {"postgres", STACK_SERVICE, SPARK_CONNECT_SERVICE, *AIRFLOW_SERVICES}


def test_postgres_is_the_healthchecked_metadata_database(services: dict[str, dict[str, Any]]) -> None:
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:")
    assert postgres["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    db = postgres["environment"]
    for name in AIRFLOW_SERVICES:
        url = urlsplit(services[name]["environment"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
        assert url.scheme.startswith("postgresql")
        assert (url.hostname, url.username, url.password) == ("postgres", db["POSTGRES_USER"], db["POSTGRES_PASSWORD"])
        assert url.path == f"/{db['POSTGRES_DB']}"


def test_airflow_services_share_the_built_image_and_the_settings(services: dict[str, dict[str, Any]]) -> None:
    api_port = services["airflow-apiserver"]["ports"][0].split(":")[-1]
    for name in (*AIRFLOW_SERVICES, STACK_SERVICE, SPARK_CONNECT_SERVICE):
        service = services[name]
        assert service["image"] == services["airflow-apiserver"]["image"], name
        assert service["build"] == {"context": ".", "dockerfile": DOCKERFILE.name}, name
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor", name
        assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false", name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == f"http://airflow-apiserver:{api_port}/execution/"
        # Tokens signed by one component must verify in the others.
        for secret in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY"):
            assert env[secret], (name, secret)
            assert env[secret] == services["airflow-apiserver"]["environment"][secret], (name, secret)


def test_each_airflow_service_runs_its_airflow_sub_command(services: dict[str, dict[str, Any]]) -> None:
    for name, sub_command in AIRFLOW_COMMANDS.items():
        command = services[name]["command"]
        words = command.split() if isinstance(command, str) else command
        # The image's entrypoint runs `airflow <command>`, with or without a leading "airflow".
        assert (words[1:] if words[0] == "airflow" else words) == [sub_command], name
        assert "entrypoint" not in services[name], name


def test_airflow_init_migrates_and_creates_the_admin_user(services: dict[str, dict[str, Any]]) -> None:
    init = services["airflow-init"]
    shell, flag, script = init["command"]
    assert (shell, flag) == ("bash", "-c")
    steps = [line.strip() for line in script.splitlines()]
    assert "set -euo pipefail" in steps
    assert steps.index("airflow db migrate") < next(i for i, s in enumerate(steps) if s.startswith("airflow users"))
    # `airflow users create` exists only with the FAB auth manager.
    assert init["environment"]["AIRFLOW__CORE__AUTH_MANAGER"].endswith(".FabAuthManager")
    assert "airflow users create --role Admin" in script
    for variable in ("AIRFLOW_ADMIN_USERNAME", "AIRFLOW_ADMIN_PASSWORD", "AIRFLOW_ADMIN_EMAIL"):
        # `$$` is compose's escape: the shell, not compose, expands the variable.
        assert f"$${{{variable}}}" in script
        assert init["environment"][variable]
    assert "restart" not in init, "a one-shot service must not restart"


def test_api_server_publishes_port_8080(services: dict[str, dict[str, Any]]) -> None:
    assert "8080:8080" in services["airflow-apiserver"]["ports"]
    for name in set(services) - {"airflow-apiserver"}:
        assert all(not port.endswith(":8080") for port in services[name].get("ports", [])), name


def test_dags_are_mounted_at_the_configured_dags_folder(services: dict[str, dict[str, Any]]) -> None:
    assert sorted(p.name for p in (ROOT / "dags").glob("*.py"))
    for name in AIRFLOW_SERVICES:
        dags_folder = services[name]["environment"]["AIRFLOW__CORE__DAGS_FOLDER"]
        assert mounts(services[name])[dags_folder][0] == "./dags", name


def test_airflow_reads_the_connections_the_local_stack_writes(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    stack_dir = PurePosixPath(stack_args(services)["--dir"])
    volume, read_only = mounts(services[STACK_SERVICE])[str(stack_dir)]
    assert volume in compose["volumes"], "the stack directory must be a named volume, shared by name"
    assert not read_only
    for name in AIRFLOW_SERVICES:
        path = secrets_file(services[name])
        assert path == stack_dir / "connections.json", name
        assert mounts(services[name])[str(path.parent)] == (volume, True), name


def test_local_stack_command_uses_only_flags_the_cli_accepts(services: dict[str, dict[str, Any]]) -> None:
    scripts = {e.name: e.value for e in metadata.entry_points(group="console_scripts")}
    assert scripts["aporia-local"] == f"{cli.__name__}:main"
    assert_the_cli_accepts(services[STACK_SERVICE]["command"])


def test_spark_connect_serves_where_the_stack_connection_points(services: dict[str, dict[str, Any]]) -> None:
    spark = services[SPARK_CONNECT_SERVICE]
    assert_the_cli_accepts(spark["command"])
    flags, stack = spark_connect_args(services), stack_args(services)
    # Reachable from the other containers, by service name, on the port the connection names.
    assert flags["--host"] == "0.0.0.0"
    assert stack["--spark-connect-host"] == SPARK_CONNECT_SERVICE
    assert stack["--spark-connect-port"] == flags["--port"]
    # Not the Airflow entrypoint (it would wait for the metadata database); dumb-init passes SIGTERM on.
    assert spark["entrypoint"] == ["/usr/bin/dumb-init", "--"]
    assert "ports" not in spark, "Spark Connect has no authentication: it must not be published"
    probe = spark["healthcheck"]["test"]
    assert probe[:3] == ["CMD", "aporia-local", "probe-spark-connect"]
    assert probe[3] == f"sc://127.0.0.1:{flags['--port']}"
    assert_the_cli_accepts(probe[1:])
    # Tasks run in the scheduler (LocalExecutor), and their syncs use this server.
    assert services["airflow-scheduler"]["depends_on"][SPARK_CONNECT_SERVICE] == {"condition": "service_healthy"}


def test_the_local_stack_is_healthy_only_once_it_is_ready(services: dict[str, dict[str, Any]]) -> None:
    stack = services[STACK_SERVICE]
    ready = PurePosixPath(stack_args(services)["--dir"]) / "ready"
    assert stack["healthcheck"]["test"] == ["CMD", "test", "-f", str(ready)]
    assert '"ready"' in inspect.getsource(cli), "the CLI no longer writes the file the healthcheck waits for"
    # A ready file left by a killed container must not pass the healthcheck of the next one.
    assert f"rm -f {ready} && exec" in " ".join(stack["entrypoint"])
    for name in TASK_RUNNERS:
        assert services[name]["depends_on"][STACK_SERVICE] == {"condition": "service_healthy"}, name


def test_depends_on_conditions_reference_existing_services(services: dict[str, dict[str, Any]]) -> None:
    waits = {
        "service_healthy": lambda s: "healthcheck" in s,
        "service_completed_successfully": lambda s: "restart" not in s,
        "service_started": lambda s: True,
    }
    for name, service in services.items():
        for dependency, spec in service.get("depends_on", {}).items():
            assert dependency in services, (name, dependency)
            assert waits[spec["condition"]](services[dependency]), (name, dependency, spec)
    for name in AIRFLOW_COMMANDS:
        assert services[name]["depends_on"]["airflow-init"] == {"condition": "service_completed_successfully"}
        assert services[name]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    # Tasks run in the scheduler and call the API server's Execution API.
    assert services["airflow-scheduler"]["depends_on"]["airflow-apiserver"] == {"condition": "service_healthy"}


def dag_connection_ids() -> set[str]:
    """Connection ids the example DAGs use: explicit `*conn_id` arguments and their operators' defaults."""
    used: set[str] = set()
    for path in (ROOT / "dags").glob("*.py"):
        tree = ast.parse(path.read_text())
        provider_names = {
            alias.asname or alias.name: node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("aporia_provider")
            for alias in node.names
        }
        for node in ast.walk(tree):
            pairs: list[tuple[Any, Any]] = []
            if isinstance(node, ast.Call):
                pairs = [(kw.arg, kw.value) for kw in node.keywords]
                if isinstance(node.func, ast.Name) and node.func.id in provider_names:
                    called = getattr(importlib.import_module(provider_names[node.func.id]), node.func.id)
                    if inspect.isclass(called):
                        used |= default_connection_ids(called)
            elif isinstance(node, ast.Dict):
                # Arguments shared through a dict, as in `Operator(**shared)`.
                pairs = [
                    (k.value, v) for k, v in zip(node.keys, node.values, strict=True) if isinstance(k, ast.Constant)
                ]
            for key, value in pairs:
                # A trigger-form param (`"spark_conn_id": Param("spark_connect_default", ...)`) names its default.
                if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "Param" and value.args:
                    value = value.args[0]
                if (
                    isinstance(key, str)
                    and key.endswith("conn_id")
                    and isinstance(value, ast.Constant)
                    and isinstance(value.value, str)
                    and "{{" not in value.value  # a template names a param, whose default is counted above
                ):
                    used.add(value.value)
    return used


def default_connection_ids(operator: type) -> set[str]:
    return {
        parameter.default
        for cls in operator.__mro__
        if "__init__" in vars(cls)
        for name, parameter in inspect.signature(vars(cls)["__init__"]).parameters.items()
        if name.endswith("conn_id") and isinstance(parameter.default, str)
    }


def test_every_connection_the_dags_use_is_served_by_the_local_stack(
    services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    used = dag_connection_ids()
    assert {"aporia_default", "redshift_default", "aws_default"} <= used
    flags = stack_args(services)
    settings = StackSettings(
        int(flags["--aporia-port"]),
        int(flags["--aws-port"]),
        int(flags["--redshift-port"]),
        int(flags["--spark-connect-port"]),
        bind_host=flags["--host"],
        public_host=flags["--public-host"],
        spark_connect_host=flags["--spark-connect-host"],
    )
    assert settings.public_host == STACK_SERVICE, "clients reach the stand-ins by the compose service name"
    stack = LocalStack(tmp_path, settings)
    assert "spark_connect" not in stack.services, "the spark-connect service runs it; the stack must not"
    assert used <= set(stack.connections())
    # Read them back as Airflow will: the secrets backend compose configures, on the file the stack writes.
    stack.write_files()
    service = services["airflow-scheduler"]
    backend_path = service["environment"]["AIRFLOW__SECRETS__BACKEND"]
    module, _, name = backend_path.rpartition(".")
    backend = getattr(importlib.import_module(module), name)(
        connections_file_path=str(tmp_path / secrets_file(service).name)
    )
    for conn_id in used | {"spark_connect_default"}:
        conn = backend.get_connection(conn_id)
        assert conn is not None, conn_id
        if conn.conn_type == "spark_connect":
            assert urlsplit(conn.host).hostname == SPARK_CONNECT_SERVICE, conn_id
        else:
            host = conn.host or urlsplit(conn.extra_dejson["endpoint_url"]).hostname
            assert host == STACK_SERVICE, conn_id
    assert backend.get_connection("aporia_default").port == settings.aporia_port
    assert backend.get_connection("redshift_default").port == settings.redshift_port
    spark_connect = backend.get_connection("spark_connect_default")
    assert (spark_connect.conn_type, spark_connect.host) == ("spark_connect", f"sc://{SPARK_CONNECT_SERVICE}")
    assert spark_connect.port == int(spark_connect_args(services)["--port"])


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    joined = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_builds_on_airflow_3_and_installs_java_jdbc_and_the_provider() -> None:
    instructions = dockerfile_instructions()
    args = dict(value.split("=", 1) for kind, value in instructions if kind == "ARG")
    base = args[next(value for kind, value in instructions if kind == "FROM").strip("${}")]
    repository, tag = base.split(":")
    version, python = tag.split("-")
    assert (repository, python) == ("apache/airflow", "python3.11")
    airflow = next(
        r for r in map(Requirement, metadata.requires("aporia-airflow-provider") or []) if r.name == "apache-airflow"
    )
    assert airflow.specifier.contains(version), f"{base} is outside {airflow}"

    runs = [(i, value) for i, (kind, value) in enumerate(instructions) if kind == "RUN"]
    users = [(i, value) for i, (kind, value) in enumerate(instructions) if kind == "USER"]

    def user_at(index: int) -> str:
        return [user for i, user in users if i < index][-1]

    apt = next((i, run) for i, run in runs if "apt-get install" in run)
    assert user_at(apt[0]) == "root"
    assert {"openjdk-17-jre-headless", "libpostgresql-jdbc-java"} <= set(apt[1].split())
    assert f"test -f {POSTGRES_JDBC_JAR}" in apt[1], "the jar must be where the extraction engine looks"

    assert ("COPY", "--chown=airflow:0 . /opt/aporia-provider") in instructions
    pip = next((i, run) for i, run in runs if run.startswith("pip install"))
    assert user_at(pip[0]) == "airflow"
    assert {'"/opt/aporia-provider[spark]"', "/opt/aporia-provider/aporia-local"} <= set(pip[1].split())
    assert metadata.distribution("aporia-local").entry_points.select(group="console_scripts", name="aporia-local")
    assert '"apache-airflow==${AIRFLOW_VERSION}"' in pip[1]
    assert instructions[-1][0] == "RUN" and user_at(len(instructions)) == "airflow", "services run as airflow"


def test_dockerfile_prepares_the_stack_volume_for_the_airflow_user(services: dict[str, dict[str, Any]]) -> None:
    stack_dir = stack_args(services)["--dir"]
    assert "user" not in services[STACK_SERVICE], "the stack must run as the image's airflow user"
    assert f"mkdir -p {stack_dir} && chown airflow:0 {stack_dir}" in DOCKERFILE.read_text()


def test_dockerignore_keeps_what_pip_needs() -> None:
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ".venv" in ignored and ".env" in ignored
    needed = (
        "pyproject.toml",
        "README.md",
        "aporia_provider",
        "aporia_provider/__init__.py",
        "aporia-local",
        "aporia-local/pyproject.toml",
        "aporia-local/aporia_local/__init__.py",
    )
    for path in needed:
        assert not any(fnmatch.fnmatch(path, pattern) for pattern in ignored), path


def test_docker_compose_accepts_the_file() -> None:
    if shutil.which("docker") is None:
        pytest.skip("the docker CLI is not installed")
    if subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30).returncode != 0:
        pytest.skip("the docker compose plugin is not installed")
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    if result.returncode != 0 and "Cannot connect to the Docker daemon" in result.stderr:
        pytest.skip("no Docker engine is reachable")
    assert result.returncode == 0, result.stderr
