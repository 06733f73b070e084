"""UNLOAD ... FORMAT PARQUET in the Redshift stand-in: the statement as Redshift's UNLOAD page documents it
(https://docs.aws.amazon.com/redshift/latest/dg/r_UNLOAD.html), written with pyarrow into the stack's S3 (moto).

The adapter hands the statement's text to `Unloader.run` (in a thread). The select runs in a PostgreSQL session of its
own (so it sees committed data, as a query from another session would) as COPY ... TO STDOUT, streamed through
pyarrow's CSV reader: memory stays flat whatever the result's size.
Files are named as Redshift names them: `<prefix><slice>_part_<nn>.parquet` (PARALLEL ON, one or more files per
slice, two slices per node as on an ra3.xlplus node) or `<prefix><nnn>.parquet` (PARALLEL OFF), a new file started
before one would pass MAXFILESIZE, in row groups of about 32 MB (ROWGROUPSIZE's default); a slice that gets no rows
writes no file. SUPER arrives as JSON text and is
written as Parquet's JSON type ("Unloading semistructured data" page:
https://docs.aws.amazon.com/redshift/latest/dg/unload-super.html; pyarrow reads it as the arrow.json extension type,
whose values are the JSON text), timestamps as Parquet timestamps (TIMESTAMPTZ adjusted to UTC), NUMERIC(p, s) as
decimals, and no Arrow schema in the files' metadata.
"""

from __future__ import annotations

import functools
import json
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aporia_local.postgres import PostgresError, WireSession
from aporia_local.redshift_rules import Refusal
from aporia_local.unload_grammar import Unload, internal_error, parse_unload

if TYPE_CHECKING:
    import pyarrow as pa

SLICES_PER_NODE = 2
# Room left in a file for the Parquet footer when deciding to start the next one.
_FOOTER_MARGIN = 64 * 1024
# UNLOAD page, ROWGROUPSIZE: "The default size is 32 MB" (measured here on the rows as Arrow holds them).
ROW_GROUP_BYTES = 32 * 1000**2
_ROLE_ARN = re.compile(r"arn:aws:iam::(\d{12}):role/([\w+=,.@/-]+)")


def arrow_type(type_oid: int, type_modifier: int) -> pa.DataType:
    import pyarrow as pa

    if type_oid == 1700 and type_modifier >= 4:
        precision, scale = (type_modifier - 4) >> 16, (type_modifier - 4) & 0xFFFF
        return pa.decimal128(precision, scale)
    known = {
        16: pa.bool_(),
        20: pa.int64(),
        21: pa.int16(),
        23: pa.int32(),
        700: pa.float32(),
        701: pa.float64(),
        1700: pa.decimal128(38, 18),  # NUMERIC without a declared precision
        1082: pa.date32(),
        1114: pa.timestamp("us"),
        1184: pa.timestamp("us", tz="UTC"),
        # SUPER (a domain over jsonb here) and json: "Amazon Redshift represents SUPER columns in Parquet as the
        # JSON data type" (Unloading semistructured data in the Parquet format page).
        3802: pa.json_(),
        114: pa.json_(),
    }
    return known.get(type_oid, pa.string())


@dataclass
class _SliceFiles:
    """The files one slice writes, each started anew before it would pass the size limit."""

    directory: Path
    name_for: Callable[[int], str]
    names: list[str] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    _writer: Any = None
    _sink: Any = None
    _group: list[pa.RecordBatch] = field(default_factory=list)  # the row group being gathered
    _written_rows: int = 0  # of the current file, in row groups written

    def write(self, batch: pa.RecordBatch, max_bytes: int) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._writer is not None and self._written_rows:
            written = self._sink.tell()
            estimate = written / self._written_rows * (self.rows[-1] - self._written_rows + batch.num_rows)
            if written + estimate + _FOOTER_MARGIN > max_bytes:
                self.close()
        if self._writer is None:
            self.names.append(self.name_for(len(self.names)))
            self.rows.append(0)
            self._written_rows = 0
            self._sink = pa.OSFile(str(self.directory / self.names[-1]), "wb")
            # No Arrow schema in the file's metadata: Redshift's files carry only Parquet's own.
            self._writer = pq.ParquetWriter(self._sink, batch.schema, store_schema=False)
        self._group.append(batch)
        self.rows[-1] += batch.num_rows
        # A group is written early when the file has no room for more: Parquet is no larger than the rows in Arrow.
        room = max_bytes - self._sink.tell() - _FOOTER_MARGIN
        if sum(b.nbytes for b in self._group) >= min(ROW_GROUP_BYTES, room):
            self._write_group()

    def _write_group(self) -> None:
        import pyarrow as pa

        if self._group:
            table = pa.Table.from_batches(self._group)
            self._writer.write_table(table, row_group_size=table.num_rows)
            self._written_rows += table.num_rows
            self._group = []

    def close(self) -> None:
        if self._writer is not None:
            self._write_group()
            self._writer.close()
            self._sink.close()
            self._writer = self._sink = None


class Unloader:
    """Runs UNLOADs for the adapter: reads the select through `connect`, writes to S3 at `aws_url`."""

    def __init__(self, postgres_port: int, database: str, aws_url: str, nodes: int, region: str = "us-east-1") -> None:
        self.postgres_port = postgres_port
        self.database = database
        self.aws_url = aws_url
        self.slices = SLICES_PER_NODE * nodes
        self.region = region

    def _client(self, service: str) -> Any:
        import boto3

        # The account's own keys: the stand-in acts for the cluster; the role's policies are checked here.
        return boto3.client(
            service,
            endpoint_url=self.aws_url,
            region_name=self.region,
            aws_access_key_id="redshift",
            aws_secret_access_key="redshift",  # noqa: S106
        )

    def run(self, sql: str, db_user: str) -> int | Refusal:
        """Unload; the number of rows written, or Redshift's refusal."""
        unload = parse_unload(sql)
        if isinstance(unload, Refusal):
            return unload
        denied = self._role_denial(unload, db_user)
        if denied:
            return denied
        s3 = self._client("s3")
        try:
            existing = [
                o["Key"]
                for page in s3.get_paginator("list_objects_v2").paginate(Bucket=unload.bucket, Prefix=unload.prefix)
                for o in page.get("Contents", [])
            ]
        except s3.exceptions.NoSuchBucket:
            return internal_error(
                f"S3ServiceException:The specified bucket does not exist,Status 404,Error NoSuchBucket,"
                f"Bucket {unload.bucket}"
            )
        if existing and unload.cleanpath:
            for start in range(0, len(existing), 1000):
                keys = [{"Key": k} for k in existing[start : start + 1000]]
                s3.delete_objects(Bucket=unload.bucket, Delete={"Objects": keys})
        elif existing and not unload.allowoverwrite:
            # UNLOAD page: "By default, UNLOAD fails if it finds files that it would possibly overwrite."
            return internal_error(
                "Specified unload destination on S3 is not empty. Consider using a different bucket / prefix, "
                "manually removing the target files in S3, or using the ALLOWOVERWRITE or CLEANPATH option."
            )
        with tempfile.TemporaryDirectory(prefix="unload-") as scratch:
            try:
                return self._write(unload, s3, Path(scratch))
            except PostgresError as error:
                # The select's own error (a missing table, say) is the UNLOAD's, as on Redshift.
                return Refusal(error.fields.get("C", "XX000"), error.fields.get("M", str(error)))

    def _write(self, unload: Unload, s3: Any, scratch: Path) -> int:
        import pyarrow as pa

        slices = [
            _SliceFiles(scratch / str(n), functools.partial(_file_name, unload, n))
            for n in range(self.slices if unload.parallel else 1)
        ]
        for piece in slices:
            piece.directory.mkdir()
        total = 0
        with WireSession(self.postgres_port, self.database) as session:
            # Text PostgreSQL writes the way pyarrow's CSV reader parses it, in full precision.
            session.query("SET TimeZone TO 'UTC'; SET DateStyle TO 'ISO'; SET extra_float_digits TO 3")
            described = session.query(f"SELECT * FROM ({unload.query}) AS unload_source LIMIT 0")
            names = [name for name, _, _ in described]
            types = [arrow_type(type_oid, modifier) for _, type_oid, modifier in described]
            schema = pa.schema([pa.field(n, t) for n, t in zip(names, types, strict=True)])
            for batch in _copy_batches(session, unload.query, schema):
                # Every slice holds part of the result, as a table's rows are spread over a cluster's slices.
                share = -(-batch.num_rows // len(slices))
                for piece, start in zip(slices, range(0, batch.num_rows, share), strict=False):
                    piece.write(batch.slice(start, share), unload.max_file_bytes)
                total += batch.num_rows
        columns = [(n, _redshift_type(t)) for n, t in zip(names, types, strict=True)]
        entries = []
        for piece in slices:
            piece.close()
            for name, rows_in_file in zip(piece.names, piece.rows, strict=True):
                local = piece.directory / name
                s3.upload_file(str(local), unload.bucket, unload.prefix + name)
                size = local.stat().st_size
                url = f"s3://{unload.bucket}/{unload.prefix}{name}"
                entries.append({"url": url, "meta": {"content_length": size, "record_count": rows_in_file}})
        if unload.manifest:
            s3.put_object(
                Bucket=unload.bucket, Key=unload.prefix + "manifest", Body=_manifest(entries, columns, unload)
            )
        return total

    def _role_denial(self, unload: Unload, db_user: str) -> Refusal | None:
        from aporia_local.aws import policies_allow

        not_assumable = internal_error(f"User {db_user} is not authorized to assume IAM Role {unload.role}")
        match = _ROLE_ARN.fullmatch(unload.role)
        if not match:
            return internal_error(f"Invalid IAM role ARN {unload.role}")
        iam = self._client("iam")
        name = match.group(2).rsplit("/", 1)[-1]
        try:
            role = iam.get_role(RoleName=name)["Role"]
        except iam.exceptions.NoSuchEntityException:
            return not_assumable
        trust = json.dumps(role.get("AssumeRolePolicyDocument") or {"Statement": []})
        if "redshift.amazonaws.com" not in trust:
            return not_assumable
        policies = [
            json.dumps(iam.get_role_policy(RoleName=name, PolicyName=p)["PolicyDocument"])
            for p in iam.list_role_policies(RoleName=name)["PolicyNames"]
        ]
        for attached in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]:
            version = iam.get_policy(PolicyArn=attached["PolicyArn"])["Policy"]["DefaultVersionId"]
            document = iam.get_policy_version(PolicyArn=attached["PolicyArn"], VersionId=version)
            policies.append(json.dumps(document["PolicyVersion"]["Document"]))
        needed = [("s3:PutObject", f"arn:aws:s3:::{unload.bucket}/{unload.prefix}{_file_name(unload, 0, 0)}")]
        needed.append(("s3:ListBucket", f"arn:aws:s3:::{unload.bucket}"))
        if unload.cleanpath:
            needed.append(
                ("s3:DeleteObject", f"arn:aws:s3:::{unload.bucket}/{unload.prefix}{_file_name(unload, 0, 0)}")
            )
        for action, resource in needed:
            if not policies_allow(policies, action, resource):
                return internal_error(
                    f"S3ServiceException:Access Denied,Status 403,Error AccessDenied: {unload.role} is not "
                    f"authorized to perform: {action} on resource: {resource}"
                )
        return None


def _copy_batches(session: WireSession, query: str, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """The select's rows as record batches of `schema`: PostgreSQL's COPY ... TO STDOUT (CSV) through a pipe into
    pyarrow's streaming CSV reader, so neither side holds more than a block of the result."""
    import pyarrow as pa
    import pyarrow.csv as csv

    read_end, write_end = os.pipe()
    failure: list[BaseException] = []

    def copy() -> None:
        with open(write_end, "wb") as sink:
            try:
                session.query(f"COPY ({query}) TO STDOUT WITH (FORMAT csv)", copy_sink=sink)
            except BaseException as error:  # re-raised in the reading thread
                failure.append(error)

    text_schema = pa.schema([pa.field(f.name, pa.string() if f.type == pa.json_() else f.type) for f in schema])
    copier = threading.Thread(target=copy, name="unload-copy", daemon=True)
    copier.start()
    try:
        with open(read_end, "rb") as source:
            if source.peek(1):
                reader = csv.open_csv(
                    source,
                    read_options=csv.ReadOptions(column_names=schema.names, block_size=4 << 20),
                    parse_options=csv.ParseOptions(newlines_in_values=True),
                    convert_options=csv.ConvertOptions(
                        column_types=text_schema,
                        true_values=["t"],
                        false_values=["f"],
                        null_values=[""],
                        strings_can_be_null=True,
                        # COPY writes NULL unquoted and an empty string as "".
                        quoted_strings_can_be_null=False,
                    ),
                )
                for batch in reader:
                    arrays = [
                        pa.ExtensionArray.from_storage(pa.json_(), column) if field.type == pa.json_() else column
                        for field, column in zip(schema, batch.columns, strict=True)
                    ]
                    yield pa.RecordBatch.from_arrays(arrays, schema=schema)
    finally:
        copier.join()
    if failure:
        raise failure[0]


def _file_name(unload: Unload, slice_number: int, part: int) -> str:
    if unload.parallel:
        return f"{slice_number:04d}_part_{part:02d}.parquet"
    return f"{part:03d}.parquet"


def _redshift_type(arrow: pa.DataType) -> str:
    import pyarrow as pa

    if pa.types.is_decimal(arrow):
        return f"numeric({arrow.precision},{arrow.scale})"
    names = {
        pa.bool_(): "boolean",
        pa.int16(): "smallint",
        pa.int32(): "integer",
        pa.int64(): "bigint",
        pa.float32(): "real",
        pa.float64(): "double precision",
        pa.date32(): "date",
        pa.timestamp("us"): "timestamp without time zone",
        pa.timestamp("us", tz="UTC"): "timestamp with time zone",
        pa.json_(): "super",
    }
    return names.get(arrow, "character varying")


def _manifest(entries: list[dict[str, Any]], columns: list[tuple[str, str]], unload: Unload) -> bytes:
    """UNLOAD page, MANIFEST [VERBOSE]: the files' URLs with their sizes and row counts; VERBOSE adds the columns."""
    manifest: dict[str, Any] = {"entries": entries}
    if unload.verbose:
        manifest["schema"] = {"elements": [{"name": n, "type": {"base": t}} for n, t in columns]}
    manifest["meta"] = {
        "content_length": sum(e["meta"]["content_length"] for e in entries),
        "record_count": sum(e["meta"]["record_count"] for e in entries),
    }
    if unload.verbose:
        manifest["author"] = {"name": "Amazon Redshift", "version": "1.0.0"}
    return json.dumps(manifest, indent=2).encode()
