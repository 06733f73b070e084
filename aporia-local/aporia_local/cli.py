"""`aporia-local`: run the local stack of real stand-ins (Aporia, AWS, Redshift) and Spark Connect on loopback."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from aporia_local.seed import SeedPlan, seed_predictions

DEFAULT_DIR = Path(".local-stack")
DEMO_START = datetime(2026, 11, 20, tzinfo=timezone.utc)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="aporia-local", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    aporia = commands.add_parser("serve-aporia", help="run the local Aporia server in the foreground")
    aporia.add_argument("--host", default="127.0.0.1")
    aporia.add_argument("--port", type=int, required=True)
    aporia.add_argument("--db", required=True, help="SQLite file")
    aporia.add_argument("--token", required=True, help="the bearer token clients must send")
    aporia.add_argument(
        "--sink",
        choices=("store", "count"),
        default="store",
        help="store logPredictions fragments (default), or only count their ids (benchmarks: a sink that keeps up)",
    )

    aws = commands.add_parser("serve-aws", help="run moto (redshift, redshift-serverless, sts, iam)")
    aws.add_argument("--host", default="127.0.0.1")
    aws.add_argument("--port", type=int, required=True)
    aws.add_argument("--signing-key", required=True, help="shared with serve-redshift to check passwords")
    aws.add_argument("--redshift-host", default="127.0.0.1")
    aws.add_argument("--redshift-port", type=int, required=True)
    aws.add_argument("--workgroup", action="append", default=[], help="serverless workgroup name")

    redshift = commands.add_parser("serve-redshift", help="run PostgreSQL behind the Redshift handshake adapter")
    redshift.add_argument("--host", default="127.0.0.1")
    redshift.add_argument("--port", type=int, required=True)
    redshift.add_argument("--data-dir", type=Path, required=True)
    redshift.add_argument("--database", default="dev")
    redshift.add_argument("--master-user", required=True)
    redshift.add_argument("--master-password", required=True)
    redshift.add_argument("--signing-key", required=True)
    redshift.add_argument("--nodes", type=int, default=1, help="the cluster's node count; 1: single-node (default)")
    redshift.add_argument(
        "--cursor-limit-mb", type=float, default=8000, help="cumulative cursor result limit of the cluster, in MB"
    )
    redshift.add_argument("--aws-url", default="", help="the AWS stand-in, whose S3 and IAM UNLOAD uses")
    redshift.add_argument("--cluster-id", default="", help="the cluster's identifier, as errors name it")

    spark_connect = commands.add_parser(
        "serve-spark-connect", help="run a Spark Connect server from the PySpark wheel in the foreground"
    )
    spark_connect.add_argument("--host", default="127.0.0.1")
    spark_connect.add_argument("--port", type=int, required=True)
    spark_connect.add_argument("--dir", type=Path, required=True, help="its configuration, logs and scratch space")
    spark_connect.add_argument("--driver-memory", default="2g")

    probe = commands.add_parser("probe-spark-connect", help="wait until a Spark Connect server runs a query")
    probe.add_argument("url", help="sc://host:port")
    probe.add_argument("--timeout", type=float, default=180.0)

    up = commands.add_parser("up", help="start the whole stack, seed demo data, print Airflow connections")
    up.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="state directory (default .local-stack)")
    up.add_argument("--detach", action="store_true", help="return once the stack is up; stop it with `down`")
    up.add_argument("--days", type=int, default=4, help="days of hourly demo data from 2026-11-20")
    up.add_argument("--rows-per-hour", type=int, default=12)
    up.add_argument("--embedding-dim", type=int, default=768)
    up.add_argument("--host", default="127.0.0.1", help="address the stand-ins listen on (0.0.0.0 in a container)")
    up.add_argument("--public-host", default="127.0.0.1", help="host name clients use to reach the stand-ins")
    up.add_argument("--aporia-port", type=int, default=0, help="0 picks a free port (likewise below)")
    up.add_argument("--aws-port", type=int, default=0)
    up.add_argument("--redshift-port", type=int, default=0)
    up.add_argument("--spark-connect-port", type=int, default=0)
    up.add_argument(
        "--nodes", type=int, default=1, help="the Redshift cluster's node count (default 1: single-node, its limits)"
    )
    up.add_argument("--cursor-limit-mb", type=float, default=8000, help="the cluster's cumulative cursor result limit")
    up.add_argument(
        "--spark-connect-host",
        default="",
        help="a Spark Connect server running elsewhere (e.g. a compose service): the connection points "
        "there and the stack starts none",
    )

    down = commands.add_parser("down", help="stop a stack started with `up`")
    down.add_argument("--dir", type=Path, default=DEFAULT_DIR)

    args = parser.parse_args(argv)
    if args.command == "serve-aporia":
        from aporia_local.aporia_server import serve as serve_aporia

        serve_aporia(args.host, args.port, args.db, args.token, args.sink)
    elif args.command == "serve-aws":
        from aporia_local.aws import Workgroup
        from aporia_local.aws import serve as serve_aws

        workgroups = [Workgroup(name, name, args.redshift_host, args.redshift_port) for name in args.workgroup]
        serve_aws(args.host, args.port, args.signing_key, args.redshift_host, workgroups)
    elif args.command == "serve-redshift":
        from aporia_local.redshift import Credentials
        from aporia_local.redshift import serve as serve_redshift
        from aporia_local.redshift_rules import Rules

        credentials = Credentials(args.master_user, args.master_password, args.signing_key)
        rules = Rules(nodes=args.nodes, cursor_limit_bytes=int(args.cursor_limit_mb * (1 << 20)))
        serve_redshift(
            args.host, args.port, args.data_dir, args.database, credentials, rules, args.aws_url, args.cluster_id
        )
    elif args.command == "serve-spark-connect":
        from aporia_local.spark import serve_connect

        serve_connect(args.dir, args.host, args.port, args.driver_memory)
    elif args.command == "probe-spark-connect":
        from aporia_local.spark import probe_connect

        try:
            seconds = probe_connect(args.url, args.timeout)
        except Exception as error:
            sys.exit(f"Spark Connect at {args.url} is not ready: {type(error).__name__}: {error}")
        print(f"Spark Connect at {args.url} ran a query after {seconds:.1f} s.")
    elif args.command == "up":
        _up(args)
    else:
        _down(args.dir)


def _up(args: argparse.Namespace) -> None:
    directory: Path = args.dir.resolve()
    if args.detach:
        _up_detached(directory, [a for a in sys.argv[1:] if a != "--detach"])
        return
    from aporia_local.redshift import free_port
    from aporia_local.stack import UNLOAD_BUCKET, UNLOAD_ROLE_ARN, LocalStack, StackSettings

    settings = StackSettings(
        args.aporia_port or free_port(),
        args.aws_port or free_port(),
        args.redshift_port or free_port(),
        args.spark_connect_port or free_port(),
        bind_host=args.host,
        public_host=args.public_host,
        spark_connect_host=args.spark_connect_host,
        cluster_nodes=args.nodes,
        cursor_limit_mb=args.cursor_limit_mb,
    )
    stack = LocalStack(directory, settings)
    # A ready file left by a killed run must not announce this one early.
    (directory / "ready").unlink(missing_ok=True)
    # Stop the children on SIGTERM (from `down`) as on Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        stack.start()
        plan = SeedPlan(DEMO_START, args.days * 24, args.rows_per_hour, args.embedding_dim)
        with stack.master_connection() as connection:
            seed_predictions(connection, plan)
        print(f"Aporia   {stack.settings.aporia_url}  (token in {directory / 'settings.json'})")
        print(f"AWS      {stack.settings.aws_url}  (moto: redshift, redshift-serverless, sts, iam, s3)")
        shape = "single-node" if settings.cluster_nodes == 1 else f"multi-node, {settings.cluster_nodes} nodes"
        print(
            f"Redshift {settings.public_host}:{settings.redshift_port}  database dev ({shape}, cursor results up to "
            f"{settings.cursor_limit_mb:g} MB)"
        )
        print(
            f"S3       {stack.settings.aws_url}  (moto; bucket {UNLOAD_BUCKET}, written by UNLOAD with "
            f"IAM_ROLE '{UNLOAD_ROLE_ARN}')"
        )
        started = stack.start_seconds.get("spark_connect")
        running = f"ready in {started:.1f} s" if started is not None else "not started here"
        print(f"Spark    {settings.spark_connect_url}  (Spark Connect, {running})")
        print(
            f"Seeded   {plan.rows} rows in model_predictions, {plan.rows_per_hour} per hour, "
            f"{plan.start:%Y-%m-%d %H:%M} to {plan.end:%Y-%m-%d %H:%M} UTC"
        )
        print(f"Airflow connections; `source {directory / 'connections.env'}` sets them with the secrets:")
        for conn_id, connection in stack.connections().items():
            shown = connection | ({"password": "***"} if "password" in connection else {})
            print(f"  AIRFLOW_CONN_{conn_id.upper()}='{json.dumps(shown)}'")
        (directory / "up.pid").write_text(str(os.getpid()))
        (directory / "ready").touch()
        # Detached, nobody is at this process's terminal to press Ctrl-C.
        stop = "" if os.environ.get(DETACHED) else " or Ctrl-C"
        print(f"The stack is up; stop it with `aporia-local down`{stop}.", flush=True)
        while all(p.poll() is None for p in stack.processes.values()):
            time.sleep(1)
        print("A stand-in exited; stopping the stack.", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
        (directory / "ready").unlink(missing_ok=True)
        (directory / "up.pid").unlink(missing_ok=True)


# Set for the stack's process that `up --detach` starts.
DETACHED = "APORIA_LOCAL_DETACHED"


def _up_detached(directory: Path, up_args: list[str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ready").unlink(missing_ok=True)
    log = open(directory / "up.log", "ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "aporia_local.cli", *up_args],
        env={**os.environ, DETACHED: "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    while not (directory / "ready").exists():
        if process.poll() is not None:
            sys.exit(f"The stack failed to start:\n{(directory / 'up.log').read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)
    print((directory / "up.log").read_text(errors="replace").rstrip())


def _down(directory: Path) -> None:
    pid_file = directory / "up.pid"
    if not pid_file.exists():
        print(f"No stack is running from {directory}.")
        return
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pid_file.unlink()
        return
    for _ in range(300):
        if not pid_file.exists():
            break
        time.sleep(0.1)
    print("The stack is down.")


if __name__ == "__main__":
    main()
