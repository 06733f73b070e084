"""The UNLOAD statement as Redshift's UNLOAD page documents it (https://docs.aws.amazon.com/redshift/latest/dg/r_UNLOAD.html),
the part of its grammar the stand-in runs: FORMAT PARQUET with PARALLEL, MAXFILESIZE, MANIFEST [VERBOSE], CLEANPATH
and ALLOWOVERWRITE, authorized by IAM_ROLE."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from aporia_local.redshift_rules import Refusal, tokens

# UNLOAD page, MAXFILESIZE: "a decimal value between 5 MB and 6.2 GB"; 6.2 GB is also the default.
MIN_FILE_BYTES = 5 * 1000**2
MAX_FILE_BYTES = int(6.2 * 1000**3)

_WORD = re.compile(r"\s*([A-Za-z_]+|\d+(?:\.\d+)?|\(|\)|'|$)")


def _syntax_error(near: str) -> Refusal:
    return Refusal("42601", f'syntax error at or near "{near or "end of input"}"')


def internal_error(message: str) -> Refusal:
    # Redshift reports UNLOAD's S3 and IAM failures as internal errors (SQLSTATE XX000).
    return Refusal("XX000", message)


@dataclass
class Unload:
    query: str
    bucket: str
    prefix: str
    role: str = ""
    parallel: bool = True
    max_file_bytes: int = MAX_FILE_BYTES
    manifest: bool = False
    verbose: bool = False
    cleanpath: bool = False
    allowoverwrite: bool = False


def _quoted(sql: str, position: int) -> tuple[str, int]:
    """The text of the literal opening at sql[position] and the position after it. UNLOAD page: quotes inside the
    quoted select are doubled ('') or escaped (\\'), and a backslash is escaped as \\\\."""
    text: list[str] = []
    i = position + 1
    while i < len(sql):
        char = sql[i]
        if char == "\\" and i + 1 < len(sql) and sql[i + 1] in "'\\":
            text.append(sql[i + 1])
            i += 2
        elif char == "'" and sql[i + 1 : i + 2] == "'":
            text.append("'")
            i += 2
        elif char == "'":
            return "".join(text), i + 1
        else:
            text.append(char)
            i += 1
    raise ValueError("unterminated quoted string")


def parse_unload(sql: str) -> Unload | Refusal:
    """UNLOAD ('select') TO 's3://bucket/prefix' IAM_ROLE 'arn' [FORMAT [AS] PARQUET] [PARALLEL [ON|OFF|TRUE|FALSE]]
    [MAXFILESIZE [AS] n [MB|GB]] [MANIFEST [VERBOSE]] [CLEANPATH | ALLOWOVERWRITE]."""
    sql = sql.strip().rstrip(";").rstrip()
    tokens: list[str] = []
    position = 0
    try:
        while True:
            match = _WORD.match(sql, position)
            if match is None:
                return _syntax_error(sql[position : position + 10].strip())
            lexeme = match.group(1)
            if lexeme == "'":
                literal, position = _quoted(sql, match.start(1))
                tokens.append("'" + literal)
                continue
            position = match.end()
            if lexeme == "" and position >= len(sql):
                break
            if lexeme == "":
                return _syntax_error(sql[position : position + 10].strip())
            tokens.append(lexeme)
    except ValueError:
        return Refusal("42601", "unterminated quoted string")
    upper = [t.upper() if not t.startswith("'") else t for t in tokens]
    if upper[:2] != ["UNLOAD", "("] or len(upper) < 6 or not upper[2].startswith("'") or upper[3] != ")":
        return _syntax_error(tokens[1] if len(tokens) > 1 else "")
    if upper[4] != "TO" or not upper[5].startswith("'"):
        return _syntax_error(tokens[4])
    target = tokens[5][1:]
    if not target.startswith("s3://") or not target[5:].split("/")[0]:
        return internal_error(f"the UNLOAD destination must be an s3://bucket/prefix path, not '{target}'")
    bucket, _, prefix = target[5:].partition("/")
    unload = Unload(query=tokens[2][1:], bucket=bucket, prefix=prefix)
    return _options(unload, tokens[6:], upper[6:])


def _options(unload: Unload, tokens: list[str], upper: list[str]) -> Unload | Refusal:
    fmt = ""
    i = 0

    def take(*words: str) -> str | None:
        nonlocal i
        if i < len(upper) and upper[i] in words:
            i += 1
            return upper[i - 1]
        return None

    while i < len(upper):
        word = upper[i]
        i += 1
        if word == "IAM_ROLE":
            if i >= len(tokens) or not tokens[i].startswith("'"):
                return _syntax_error(tokens[i] if i < len(tokens) else "")
            unload.role = tokens[i][1:]
            i += 1
        elif word == "FORMAT":
            take("AS")
            fmt = take("PARQUET", "CSV", "JSON") or ""
            if not fmt:
                return _syntax_error(tokens[i] if i < len(tokens) else "")
        elif word in ("PARQUET", "CSV", "JSON"):
            fmt = word
        elif word == "PARALLEL":
            unload.parallel = take("ON", "TRUE", "OFF", "FALSE") not in ("OFF", "FALSE")
        elif word == "MAXFILESIZE":
            take("AS")
            if i >= len(upper) or not re.fullmatch(r"\d+(\.\d+)?", upper[i]):
                return _syntax_error(tokens[i] if i < len(tokens) else "")
            size = Decimal(upper[i])
            i += 1
            unit = take("MB", "GB") or "MB"
            unload.max_file_bytes = int(size * (1000**3 if unit == "GB" else 1000**2))
            if not MIN_FILE_BYTES <= unload.max_file_bytes <= MAX_FILE_BYTES:
                return Refusal("22023", "MAXFILESIZE must be between 5 MB and 6.2 GB")
        elif word == "MANIFEST":
            unload.manifest = True
            unload.verbose = take("VERBOSE") is not None
        elif word == "CLEANPATH":
            unload.cleanpath = True
        elif word == "ALLOWOVERWRITE":
            unload.allowoverwrite = True
        else:
            return _syntax_error(tokens[i - 1])
    if not unload.role:
        return Refusal("42601", "UNLOAD needs an authorization: IAM_ROLE 'arn:aws:iam::<account-id>:role/<role-name>'")
    if fmt != "PARQUET":
        return Refusal("0A000", "the Redshift stand-in unloads FORMAT PARQUET only")
    if _outer_limit(unload.query):
        # UNLOAD page, usage notes: "The SELECT query can't use a LIMIT clause in the outer SELECT."
        return Refusal("0A000", "LIMIT is not supported in the outer SELECT of UNLOAD; put it in a nested SELECT")
    if unload.cleanpath and unload.allowoverwrite:
        # UNLOAD page: CLEANPATH "can't be specified if ALLOWOVERWRITE is specified".
        return _syntax_error("CLEANPATH")
    return unload


def _outer_limit(query: str) -> bool:
    depth = 0
    for token in tokens(query):
        depth += {"(": 1, ")": -1}.get(token, 0)
        if depth == 0 and token.upper() == "LIMIT":
            return True
    return False
