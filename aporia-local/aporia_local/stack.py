"""The local stack: the Aporia, AWS and Redshift stand-ins and a Spark Connect server as child processes.

Used by `aporia-local up`, by the demo and by the test fixtures, so all three start the same way.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aporia_local.aws import ACCOUNT_ID, REGION
from aporia_local.redshift import free_port
from aporia_local.spark import port_is_open

CLUSTER_ID = "aporia-demo"
WORKGROUP = "aporia-demo-wg"
DATABASE = "dev"
MASTER_USER = "awsuser"
DB_USER = "aporia_reader"
IAM_USER = "aporia-sync"
ENVIRONMENT = "production"
SERVICES = ("aporia", "aws", "redshift", "spark_connect")
SPARK_CONNECT_START_TIMEOUT = 180.0
# What UNLOAD writes to: a bucket the stack creates and the role Redshift assumes to write there (trusted by
# redshift.amazonaws.com, associated with the cluster), as a platform team would set them up.
UNLOAD_BUCKET = "aporia-local-unload"
UNLOAD_ROLE = "aporia-local-unload"
UNLOAD_ROLE_ARN = f"arn:aws:iam::{ACCOUNT_ID}:role/{UNLOAD_ROLE}"
UNLOAD_TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "redshift.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}
UNLOAD_ROLE_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": ["s3:PutObject", "s3:GetObject", "s3:DeleteObject"],
            "Resource": f"arn:aws:s3:::{UNLOAD_BUCKET}/*",
        },
        {
            "Effect": "Allow",
            "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
            "Resource": f"arn:aws:s3:::{UNLOAD_BUCKET}",
        },
    ],
}
# Where the Redshift connections' extras send large windows (the sync reads and deletes the files there), and a
# bucket for rejected rows (rejected_rows_path), which the sync writes.
UNLOAD_PREFIX = f"s3://{UNLOAD_BUCKET}/syncs"
REJECTS_BUCKET = "aporia-local-rejects"
READER_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": "redshift:GetClusterCredentials",
            "Resource": f"arn:aws:redshift:{REGION}:{ACCOUNT_ID}:dbuser:{CLUSTER_ID}/{DB_USER}",
        },
        {
            "Effect": "Allow",
            "Action": "redshift-serverless:GetCredentials",
            "Resource": f"arn:aws:redshift-serverless:{REGION}:{ACCOUNT_ID}:workgroup/{WORKGROUP}",
        },
        {
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:DeleteObject"],
            "Resource": f"arn:aws:s3:::{UNLOAD_BUCKET}/syncs/*",
        },
        {
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": f"arn:aws:s3:::{UNLOAD_BUCKET}",
            "Condition": {"StringLike": {"s3:prefix": "syncs/*"}},
        },
        {"Effect": "Allow", "Action": ["s3:PutObject", "s3:GetObject"], "Resource": f"arn:aws:s3:::{REJECTS_BUCKET}/*"},
    ],
}


@dataclass
class StackSettings:
    """Ports and secrets of one stack; written to the stack directory so `down` and the demo can find them."""

    aporia_port: int
    aws_port: int
    redshift_port: int
    spark_connect_port: int = field(default_factory=free_port)
    aporia_token: str = field(default_factory=lambda: "aporia-local-" + secrets.token_urlsafe(16))
    master_password: str = field(default_factory=lambda: "Master-" + secrets.token_urlsafe(12))
    # May start with "-": passed as --signing-key=..., never as a separate argument argparse would take for a flag.
    signing_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    aws_access_key_id: str = ""
    aws_secret_access_key: str = ""
    # Where the stand-ins listen, and the name clients use for them (a compose service name, say).
    bind_host: str = "127.0.0.1"
    public_host: str = "127.0.0.1"
    # The host of a Spark Connect server run elsewhere (a compose service); empty: the stack runs one.
    spark_connect_host: str = ""
    # What the Aporia stand-in does with logPredictions fragments: "store", or "count" (benchmarks).
    aporia_sink: str = "store"
    # The Redshift cluster's shape: 1 is a single-node cluster (FETCH at most 1000 rows, no FETCH ALL), more is
    # multi-node; DescribeClusters reports the same NumberOfNodes and ClusterType.
    cluster_nodes: int = 1
    # The cluster's cumulative cursor result limit (DECLARE page's "Cursor constraints"; dc2.large single-node: 8,000).
    cursor_limit_mb: float = 8000

    @classmethod
    def with_free_ports(cls, **settings: Any) -> StackSettings:
        return cls(free_port(), free_port(), free_port(), **settings)

    @property
    def aporia_url(self) -> str:
        return f"http://{self.public_host}:{self.aporia_port}"

    @property
    def aws_url(self) -> str:
        return f"http://{self.public_host}:{self.aws_port}"

    @property
    def spark_connect_url(self) -> str:
        return f"sc://{self.spark_connect_host or self.public_host}:{self.spark_connect_port}"


class LocalStack:
    def __init__(self, directory: Path, settings: StackSettings) -> None:
        self.directory = directory.resolve()
        self.settings = settings
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._spark_probe: subprocess.Popen[bytes] | None = None
        # Seconds from launch to ready, per service started.
        self.start_seconds: dict[str, float] = {}
        self._launched_at: dict[str, float] = {}

    @property
    def services(self) -> tuple[str, ...]:
        """The services this stack runs: all, but the Spark Connect server when it runs elsewhere."""
        return tuple(n for n in SERVICES if n != "spark_connect" or not self.settings.spark_connect_host)

    def start(self, only: tuple[str, ...] = ()) -> None:
        """Start the stack's services, or `only` these (AWS and Redshift, say, for a second cluster shape)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        services = only or self.services
        # The Spark Connect server takes longest to start: launched first, waited for last.
        spark = "spark_connect" in services
        if spark:
            self._launch("spark_connect")
        for name in services:
            if name != "spark_connect":
                self.start_service(name)
        self._provision_aws()
        if spark:
            self._wait_until_ready("spark_connect")
        self.write_files()

    def start_service(self, name: str) -> None:
        self._launch(name)
        self._wait_until_ready(name)

    def _launch(self, name: str) -> None:
        s = self.settings
        commands = {
            "aporia": [
                "serve-aporia",
                "--host",
                s.bind_host,
                "--port",
                str(s.aporia_port),
                "--db",
                str(self.directory / "aporia.sqlite"),
                "--token",
                s.aporia_token,
                "--sink",
                s.aporia_sink,
            ],
            "aws": [
                "serve-aws",
                "--host",
                s.bind_host,
                "--port",
                str(s.aws_port),
                f"--signing-key={s.signing_key}",
                "--redshift-host",
                s.public_host,
                "--redshift-port",
                str(s.redshift_port),
                "--workgroup",
                WORKGROUP,
            ],
            "redshift": [
                "serve-redshift",
                "--host",
                s.bind_host,
                "--port",
                str(s.redshift_port),
                "--data-dir",
                str(self.directory / "redshift"),
                "--database",
                DATABASE,
                "--master-user",
                MASTER_USER,
                "--master-password",
                s.master_password,
                f"--signing-key={s.signing_key}",
                "--nodes",
                str(s.cluster_nodes),
                "--cursor-limit-mb",
                str(s.cursor_limit_mb),
                "--aws-url",
                f"http://127.0.0.1:{s.aws_port}",
                "--cluster-id",
                CLUSTER_ID,
            ],
            "spark_connect": [
                "serve-spark-connect",
                "--host",
                s.bind_host,
                "--port",
                str(s.spark_connect_port),
                "--dir",
                str(self.directory / "spark-connect"),
            ],
        }
        self._launched_at[name] = time.monotonic()
        with open(self.directory / f"{name}.log", "ab") as log_file:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "aporia_local.cli", *commands[name]],
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        if name == "spark_connect":
            # The probe (a query through a Connect session) runs in a process of its own, importing
            # PySpark while the JVM starts.
            with open(self.directory / "spark_connect_probe.log", "ab") as probe_log:
                self._spark_probe = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "aporia_local.cli",
                        "probe-spark-connect",
                        f"sc://127.0.0.1:{s.spark_connect_port}",
                        "--timeout",
                        str(SPARK_CONNECT_START_TIMEOUT),
                    ],
                    stdout=probe_log,
                    stderr=subprocess.STDOUT,
                )

    def _wait_until_ready(self, name: str) -> None:
        s = self.settings
        log_path = self.directory / f"{name}.log"
        if name == "spark_connect":
            assert self._spark_probe is not None
            _wait_for_probe(self._spark_probe, self.processes[name], log_path, SPARK_CONNECT_START_TIMEOUT)
        else:
            port = {"aporia": s.aporia_port, "aws": s.aws_port, "redshift": s.redshift_port}[name]
            _wait_for_port(port, self.processes[name], log_path)
        self.start_seconds[name] = time.monotonic() - self._launched_at[name]

    def stop_service(self, name: str, sig: int = signal.SIGTERM) -> None:
        if name == "spark_connect" and self._spark_probe and self._spark_probe.poll() is None:
            self._spark_probe.kill()
            self._spark_probe.wait()
        process = self.processes.pop(name, None)
        if process and process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def stop(self) -> None:
        for name in reversed(SERVICES):
            self.stop_service(name)

    def _provision_aws(self) -> None:
        """Create the IAM user whose keys Airflow uses, the cluster, and UNLOAD's bucket and role."""
        import boto3

        s = self.settings
        session = boto3.session.Session(aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")  # noqa: S106
        local_url = f"http://127.0.0.1:{s.aws_port}"
        iam = session.client("iam", endpoint_url=local_url, region_name=REGION)
        redshift = session.client("redshift", endpoint_url=local_url, region_name=REGION)
        iam.create_user(UserName=IAM_USER)
        # The least privilege the provider needs, as AporiaHook.iam_policy() renders it.
        iam.put_user_policy(UserName=IAM_USER, PolicyName="aporia-redshift", PolicyDocument=json.dumps(READER_POLICY))
        key = iam.create_access_key(UserName=IAM_USER)["AccessKey"]
        s.aws_access_key_id, s.aws_secret_access_key = key["AccessKeyId"], key["SecretAccessKey"]
        s3 = session.client("s3", endpoint_url=local_url, region_name=REGION)
        for bucket in (UNLOAD_BUCKET, REJECTS_BUCKET):
            s3.create_bucket(Bucket=bucket)
        iam.create_role(RoleName=UNLOAD_ROLE, AssumeRolePolicyDocument=json.dumps(UNLOAD_TRUST_POLICY))
        iam.put_role_policy(
            RoleName=UNLOAD_ROLE, PolicyName="aporia-unload", PolicyDocument=json.dumps(UNLOAD_ROLE_POLICY)
        )
        shape = {"ClusterType": "single-node"} if s.cluster_nodes == 1 else {"ClusterType": "multi-node"}
        redshift.create_cluster(
            ClusterIdentifier=CLUSTER_ID,
            NodeType="ra3.xlplus",
            NumberOfNodes=s.cluster_nodes,
            IamRoles=[UNLOAD_ROLE_ARN],
            **shape,
            MasterUsername=MASTER_USER,
            MasterUserPassword=s.master_password,
            DBName=DATABASE,
            Port=s.redshift_port,
        )

    def connections(self) -> dict[str, dict[str, Any]]:
        """Airflow connections for this stack, in Airflow's JSON connection format."""
        s = self.settings
        # IAM credentials; large windows unloaded to the stack's S3, over the stand-in's cursor limit or not.
        redshift_iam = {
            "iam": True,
            "ssl": False,
            "unload_s3_prefix": UNLOAD_PREFIX,
            "unload_iam_role": UNLOAD_ROLE_ARN,
            "cursor_result_limit_mb": s.cursor_limit_mb,
        }
        return {
            "aporia_default": {
                "conn_type": "aporia",
                "host": s.public_host,
                "port": s.aporia_port,
                "schema": "http",
                "password": s.aporia_token,
                "extra": {"environment": ENVIRONMENT, "verify_ssl": False},
            },
            "aws_default": {
                "conn_type": "aws",
                "login": s.aws_access_key_id,
                "password": s.aws_secret_access_key,
                "extra": {"region_name": REGION, "endpoint_url": s.aws_url},
            },
            "redshift_default": {
                "conn_type": "redshift",
                "host": s.public_host,
                "port": s.redshift_port,
                "schema": DATABASE,
                "login": DB_USER,
                "extra": {**redshift_iam, "cluster_identifier": CLUSTER_ID},
            },
            "redshift_serverless": {
                "conn_type": "redshift",
                "host": s.public_host,
                "port": s.redshift_port,
                "schema": DATABASE,
                "extra": {**redshift_iam, "is_serverless": True, "serverless_work_group": WORKGROUP},
            },
            # The Spark provider's connection type; its hook builds sc://host:port/ from these.
            "spark_connect_default": {
                "conn_type": "spark_connect",
                "host": f"sc://{s.spark_connect_host or s.public_host}",
                "port": s.spark_connect_port,
            },
        }

    def airflow_env(self) -> dict[str, str]:
        return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(c) for conn_id, c in self.connections().items()}

    def write_files(self) -> None:
        (self.directory / "settings.json").write_text(json.dumps(asdict(self.settings), indent=2))
        exports = "".join(f"export {k}='{v}'\n" for k, v in self.airflow_env().items())
        (self.directory / "connections.env").write_text(exports)
        # The same connections for Airflow's LocalFilesystemBackend (used by docker-compose.yaml).
        (self.directory / "connections.json").write_text(json.dumps(self.connections(), indent=2))
        for name in ("settings.json", "connections.env", "connections.json"):
            os.chmod(self.directory / name, 0o600)

    def master_connection(self) -> Any:
        """A redshift_connector connection as the master user, for seeding and inspection."""
        import redshift_connector

        return redshift_connector.connect(
            host="127.0.0.1",
            port=self.settings.redshift_port,
            database=DATABASE,
            user=MASTER_USER,
            password=self.settings.master_password,
            ssl=False,
        )


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log_path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{log_path.stem} stand-in exited:\n{log_path.read_text(errors='replace')[-3000:]}")
        if port_is_open(port):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{log_path.stem} stand-in did not open port {port} within {timeout:.0f} s.")


def _wait_for_probe(
    probe: subprocess.Popen[bytes], process: subprocess.Popen[bytes], log_path: Path, timeout: float
) -> None:
    """Wait for the readiness probe of a service to succeed while the service keeps running."""
    deadline = time.monotonic() + timeout + 30  # the probe times itself out first
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{log_path.stem} exited:\n{log_path.read_text(errors='replace')[-3000:]}")
        returncode = probe.poll()
        if returncode == 0:
            return
        if returncode is not None:
            probe_log = log_path.with_name(f"{log_path.stem}_probe.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{log_path.stem} did not answer a query:\n{probe_log}")
        time.sleep(0.1)
    probe.kill()
    probe.wait()
    raise RuntimeError(f"{log_path.stem} did not answer a query within {timeout:.0f} s.")
