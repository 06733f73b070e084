"""Redshift's documented rules that PostgreSQL does not have, decided statement by statement.

The adapter asks `Rules.check` about every statement a client sends (simple Query and extended-protocol Bind
alike). A refused statement is answered by running `CALL redshift_refusal(code, message)` in its place, so
PostgreSQL raises Redshift's error and keeps the protocol and the transaction as a server would.

- FETCH page (https://docs.aws.amazon.com/redshift/latest/dg/fetch.html): "For single-node clusters, the maximum
  value for count is 1000"; FETCH ALL / FORWARD ALL "isn't supported for single-node clusters". The page states no
  maximum for multi-node clusters, so none is applied there.
- DECLARE page (https://docs.aws.amazon.com/redshift/latest/dg/declare.html): the grammar is
  `DECLARE cursor_name CURSOR FOR query` only; a cursor is declared within a transaction block (PostgreSQL already
  refuses one outside, SQLSTATE 25P01); "Only one cursor at a time can be open per session"; "the maximum cumulative
  result set size for all cursors is constrained based on the cluster node type" (its "Cursor constraints" table,
  e.g. dc2.large 8,000 MB single-node, ra3.xlplus 64,000 MB single-node). The stand-in's limit is a setting.

The pages give no error text or SQLSTATE for these refusals; the stand-in's are worded after the pages.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

SINGLE_NODE_FETCH_MAX = 1000
_TOKEN = re.compile(r"""\s+|--[^\n]*|/\*.*?\*/|'(?:[^']|'')*'|"(?:[^"]|"")*"|[A-Za-z_][A-Za-z0-9_$]*|\d+|.""", re.S)
_DOLLAR_QUOTE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


@dataclass(frozen=True)
class Refusal:
    """Redshift's answer to a statement it refuses."""

    code: str
    message: str

    def as_sql(self) -> str:
        return f"CALL public.redshift_refusal({quote_literal(self.code)}, {quote_literal(self.message)})"


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def split_statements(sql: str) -> list[str]:
    """The statements of a simple Query, each with its own text (';' inside literals, comments and $$ bodies kept)."""
    statements: list[str] = []
    start = position = 0
    while position < len(sql):
        dollar = _DOLLAR_QUOTE.match(sql, position)
        if dollar:
            end = sql.find(dollar.group(0), dollar.end())
            position = len(sql) if end < 0 else end + len(dollar.group(0))
            continue
        token = _TOKEN.match(sql, position)
        assert token is not None  # the last alternative matches any character
        if token.group(0) == ";":
            statements.append(sql[start : token.start()])
            start = token.end()
        position = token.end()
    statements.append(sql[start:])
    return [s for s in statements if words(s, 1)]


def tokens(sql: str) -> Iterator[str]:
    """The statement's tokens, comments and white space left out (a literal or a quoted name is one token)."""
    for token in _TOKEN.finditer(sql):
        text = token.group(0)
        if not (text.isspace() or text.startswith(("--", "/*"))):
            yield text


def words(sql: str, limit: int) -> list[str]:
    """The first `limit` tokens of a statement, comments and white space left out; keywords upper-cased."""
    found: list[str] = []
    for text in tokens(sql):
        found.append(text.upper() if text[0].isalpha() or text[0] == "_" else text)
        if len(found) == limit:
            break
    return found


@dataclass
class Session:
    """What the rules remember of one client session."""

    open_cursor: str | None = None
    # Result bytes fetched from the open cursor: what Redshift's leader node holds for it.
    cursor_bytes: int = 0


@dataclass
class Rules:
    """The rules of one cluster: its shape and its cursor-result limit, shared by all its sessions."""

    nodes: int = 1
    cursor_limit_bytes: int = 256 << 20
    sessions: dict[int, Session] = field(default_factory=dict)

    @property
    def single_node(self) -> bool:
        return self.nodes == 1

    def session(self, key: int) -> Session:
        return self.sessions.setdefault(key, Session())

    def forget(self, key: int) -> None:
        self.sessions.pop(key, None)

    def transaction_ended(self, key: int) -> None:
        """Cursors live in their transaction block: a commit, rollback or failed block closes them."""
        session = self.session(key)
        session.open_cursor, session.cursor_bytes = None, 0

    def fetched(self, key: int, result_bytes: int) -> None:
        session = self.session(key)
        if session.open_cursor is not None:
            session.cursor_bytes += result_bytes

    def check(self, key: int, sql: str) -> Refusal | None:
        """Redshift's refusal of `sql` in this session, or None (and the session's state updated) when it runs."""
        tokens = words(sql, 12)
        verb = tokens[0] if tokens else ""
        session = self.session(key)
        if verb == "DECLARE":
            return self._declare(session, tokens)
        if verb == "FETCH":
            return self._fetch(session, tokens)
        if verb == "CLOSE":
            if len(tokens) > 1 and tokens[1] in ("ALL", session.open_cursor, (session.open_cursor or "").upper()):
                session.open_cursor, session.cursor_bytes = None, 0
        elif verb in ("COMMIT", "END", "ROLLBACK", "ABORT") and "TO" not in tokens[1:3]:
            # The block ends, and its cursors with it (ROLLBACK TO a savepoint keeps them).
            session.open_cursor, session.cursor_bytes = None, 0
        return None

    def _declare(self, session: Session, tokens: list[str]) -> Refusal | None:
        # DECLARE page: DECLARE cursor_name CURSOR FOR query, nothing between (no NO SCROLL, BINARY, WITH HOLD).
        name = tokens[1] if len(tokens) > 1 else ""
        for position, expected in ((2, "CURSOR"), (3, "FOR")):
            if len(tokens) <= position or tokens[position] != expected:
                near = tokens[position] if len(tokens) > position else "end of input"
                return Refusal("42601", f'syntax error at or near "{near}"')
        cursor = name.lower()
        if session.open_cursor is not None and session.open_cursor != cursor:
            # DECLARE page: "Only one cursor at a time can be open per session."
            return Refusal(
                "24000",
                f'cursor "{cursor}" cannot be declared: cursor "{session.open_cursor}" is open, and only one '
                "cursor at a time can be open per session; CLOSE it first",
            )
        session.open_cursor, session.cursor_bytes = cursor, 0
        return None

    def _fetch(self, session: Session, tokens: list[str]) -> Refusal | None:
        direction = tokens[1:3]
        count: int | None = None
        fetch_all = False
        if direction[:1] == ["ALL"] or direction == ["FORWARD", "ALL"]:
            fetch_all = True
        elif direction[:1] == ["FORWARD"] and len(direction) > 1 and direction[1].isdigit():
            count = int(direction[1])
        elif direction[:1] and direction[0].isdigit():
            count = int(direction[0])
        if self.single_node and fetch_all:
            # FETCH page: "ALL isn't supported for single-node clusters."
            return Refusal("0A000", "FETCH ALL is not supported for single-node clusters; FETCH FORWARD at most 1000")
        if self.single_node and count is not None and count > SINGLE_NODE_FETCH_MAX:
            # FETCH page: "For single-node clusters, the maximum value for count is 1000."
            return Refusal(
                "22023",
                f"FETCH count {count} exceeds the maximum of {SINGLE_NODE_FETCH_MAX} rows for single-node clusters",
            )
        held = sum(s.cursor_bytes for s in self.sessions.values())
        if session.open_cursor is not None and held > self.cursor_limit_bytes:
            # DECLARE page, "Cursor constraints": the cumulative result set size of all cursors is bounded.
            return Refusal(
                "54000",
                f"cursor result set size exceeds the cluster's maximum cumulative cursor result set size of "
                f"{self.cursor_limit_bytes / (1 << 20):g} MB; use UNLOAD for large results",
            )
        return None
