"""Local stand-in for the Aporia API (DESIGN.md §3 and §6): REST under /v1beta, GraphQL controller.

A real HTTP server (FastAPI + strawberry-graphql, served by uvicorn) over SQLite storage
(`aporia_store`). The logPredictions mutation as clients send it (variables for every argument) has a
fast path that skips strawberry: `LogPredictionsFastPath` recognises the document once, and batches that
fit the schema are checked and stored in C (`fast_ingest`); anything else goes through strawberry as before.
With `--sink count` (benchmarks only) logPredictions batches are counted, not stored (`CountingSink`).
Every endpoint needs `Authorization: Bearer <token>`. Besides the Aporia API it
serves read-only `/local/fragments` views for people and tests, and `/local/faults` to make the
next requests fail or stall (for retry tests), and `/local/reset`.

    python -m aporia_local.aporia_server --host 127.0.0.1 --port 8081 --db aporia.db --token T
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import threading
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Annotated, Any, NewType, cast
from urllib.parse import parse_qs

import anyio.to_thread
import msgspec
import orjson
import strawberry
import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi import Query as QueryParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from graphql import (
    FieldNode,
    GraphQLError,
    GraphQLSyntaxError,
    OperationDefinitionNode,
    OperationType,
    VariableNode,
    parse,
    print_ast,
    validate,
)
from graphql.utilities import value_from_ast_untyped
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.fastapi import GraphQLRouter
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from aporia_local import rules
from aporia_local.aporia_store import AporiaStore, FragmentFilter, StoreError

GRAPHQL_PATH = "/v1/controller/graphql"
UNAUTHORIZED_DETAIL = "Invalid or missing API token"

# Request bodies. Unknown keys are kept (extra="allow") so stored bodies are what the client sent.


class ModelBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    description: str | None = None
    owner: str | None = None
    color: str | None = None
    icon: str | None = None
    tags: Any = None


class VersionBody(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())
    name: str = Field(min_length=1)
    model_type: str
    version_schema: dict[str, Any]
    model_data_type: str | None = None
    labels: Any = None
    feature_importance: Any = None
    mapping: Any = None


class DataSourceBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    config: dict[str, Any] = Field(default_factory=dict)


class SyncBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    enabled: bool
    environment: str = Field(min_length=1)
    schedule: str | None = None


class DatasetBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    data_source: DataSourceBody
    sync: SyncBody
    id_column: str = Field(min_length=1)
    timestamp_column: str = Field(min_length=1)
    features: dict[str, str] | None = None
    predictions: dict[str, str] | None = None
    labels: dict[str, str] | None = None
    raw_inputs: dict[str, str] | None = None


class FaultBody(BaseModel):
    path: str = Field(pattern="^/")
    status: int = Field(default=503, ge=400, le=599)
    count: int = Field(default=1, ge=1)
    delay_seconds: float = Field(default=0, ge=0)
    # Only requests whose body holds this text (e.g. "logPredictions"), to fault one GraphQL operation.
    operation: str | None = None


def _body(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_unset=True)


# Faults and auth


@dataclass
class Fault:
    path: str
    status: int
    count: int
    delay_seconds: float
    operation: str | None = None


class FaultPlan:
    """Faults to inject: the next `count` requests under `path` fail with `status` or are delayed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> list[dict[str, Any]]:
        with self._lock:
            self._faults.append(fault)
            return [asdict(f) for f in self._faults]

    def clear(self) -> int:
        with self._lock:
            cleared = len(self._faults)
            self._faults.clear()
            return cleared

    def wants_body(self, path: str) -> bool:
        with self._lock:
            return any(path.startswith(f.path) and f.operation for f in self._faults)

    def take(self, path: str, body: bytes = b"") -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if path.startswith(fault.path) and (not fault.operation or fault.operation.encode() in body):
                    fault.count -= 1
                    if fault.count == 0:
                        self._faults.remove(fault)
                    return fault
        return None


class GuardMiddleware:
    """Pure ASGI middleware (cheap per request): bearer-token check, then injected faults.

    /local/ paths are never faulted, so a test can always clear faults and inspect the data.
    """

    def __init__(self, app: ASGIApp, token: str, faults: FaultPlan) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()
        self.faults = faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        if not hmac.compare_digest(given, self.expected):
            response = JSONResponse(
                {"detail": UNAUTHORIZED_DETAIL}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
            )
            await response(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith("/local/"):
            await self.app(scope, receive, send)
            return
        body = b""
        if self.faults.wants_body(path):
            receive, body = await _buffered(receive)
        fault = self.faults.take(path, body)
        if fault is not None:
            if fault.delay_seconds <= 0:
                detail = f"Injected fault: HTTP {fault.status} for {path} (POST /local/faults)."
                await JSONResponse({"detail": detail}, status_code=fault.status)(scope, receive, send)
                return
            await asyncio.sleep(fault.delay_seconds)
        await self.app(scope, receive, send)


async def _buffered(receive: Receive) -> tuple[Receive, bytes]:
    """Read the whole request body, and a `receive` that hands it to the app as if unread."""
    chunks, more = [], True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body = b"".join(chunks)
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay, body


# GraphQL

# Fragments are a JSON scalar named `Prediction`, so the SDK's `$predictions: [Prediction]!` still
# validates while graphql-core and strawberry pass each element through untouched. Measured with
# 10,000-fragment batches: ~1.7 us of GraphQL work per fragment this way, ~49 us as an input type.
PredictionFragment = NewType("PredictionFragment", object)


def _identity(value: object) -> object:
    return value


def _parse_fragment_literal(node: Any, variables: dict[str, Any] | None = None) -> Any:
    return value_from_ast_untyped(node, variables)


@strawberry.type
class LogPredictionsResult:
    warnings: list[str]


@strawberry.type
class SchemaField:
    name: str
    type: str
    dimensions: list[int] | None

    @classmethod
    def of(cls, spec: rules.Field) -> SchemaField:
        return cls(name=spec.name, type=spec.type, dimensions=list(spec.dimensions) if spec.dimensions else None)


@strawberry.type
class ModelVersionSchema:
    features: list[SchemaField]
    predictions: list[SchemaField]
    raw_inputs: list[SchemaField]


def _store(info: strawberry.Info) -> AporiaStore:
    store: AporiaStore = info.context["store"]
    return store


@strawberry.type
class Query:
    @strawberry.field
    async def model_version_schema(
        self, info: strawberry.Info, model_id: str, model_version: str
    ) -> ModelVersionSchema:
        schema = await anyio.to_thread.run_sync(_store(info).version_schema, model_id, model_version)
        return ModelVersionSchema(
            features=[SchemaField.of(f) for f in schema["features"].values()],
            predictions=[SchemaField.of(f) for f in schema["predictions"].values()],
            raw_inputs=[SchemaField.of(f) for f in schema["raw_inputs"].values()],
        )


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def log_predictions(
        self,
        info: strawberry.Info,
        model_id: str,
        model_version: str,
        environment: str,
        predictions: list[PredictionFragment | None],
        is_sync: bool,  # accepted for wire compatibility; every batch is stored before answering
    ) -> LogPredictionsResult:
        # A worker thread, so other requests (counts, faults) are served while a batch is stored.
        warnings = await anyio.to_thread.run_sync(
            _store(info).log_fragments, model_id, model_version, environment, predictions
        )
        return LogPredictionsResult(warnings=warnings)


class AporiaSchema(strawberry.Schema):
    def process_errors(self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None) -> None:
        # Bad queries and refused requests are the client's to read in `errors`; only unexpected
        # exceptions in resolvers deserve a traceback in the server log.
        unexpected = [e for e in errors if e.original_error and not isinstance(e.original_error, StoreError)]
        super().process_errors(unexpected, execution_context)


SCHEMA = AporiaSchema(
    query=Query,
    mutation=Mutation,
    config=StrawberryConfig(
        scalar_map={
            PredictionFragment: strawberry.scalar(
                name="Prediction",
                description="One fragment: {id, features, predictions, rawInputs, actuals, metrics, "
                "occurredAt, confidence}; fragments with the same id merge.",
                serialize=_identity,
                parse_value=_identity,
                parse_literal=_parse_fragment_literal,
            )
        }
    ),
)


# The logPredictions fast path

# The variables of the mutation, by name, as the SDK declares them.
_LOG_PREDICTIONS_VARIABLES = {
    "modelId": "String!",
    "modelVersion": "String!",
    "environment": "String!",
    "predictions": "[Prediction]!",
    "isSync": "Boolean!",
}


class _LogVariables(msgspec.Struct, gc=False):
    # Other variables may come along: GraphQL ignores those the operation does not declare.
    modelId: str
    modelVersion: str
    environment: str
    isSync: bool
    predictions: msgspec.Raw


class _LogRequest(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    query: str
    variables: _LogVariables
    operationName: str | None = None


_LOG_REQUEST = msgspec.json.Decoder(_LogRequest)
_RECOGNISED: dict[tuple[str, str | None], bool] = {}
_RECOGNISED_MAX = 256


def is_log_predictions(query: str, operation_name: str | None) -> bool:
    """Whether `query` is exactly the logPredictions mutation with a variable for each argument, asking for
    `warnings` only: then the fast path answers as strawberry would. Decided once per document."""
    key = (query, operation_name)
    known = _RECOGNISED.get(key)
    if known is None:
        known = _recognise(query, operation_name)
        if len(_RECOGNISED) >= _RECOGNISED_MAX:
            _RECOGNISED.clear()
        _RECOGNISED[key] = known
    return known


def _recognise(query: str, operation_name: str | None) -> bool:
    try:
        document = parse(query)
    except GraphQLSyntaxError:
        return False
    if len(document.definitions) != 1 or validate(SCHEMA._schema, document):
        return False
    operation = document.definitions[0]
    if not isinstance(operation, OperationDefinitionNode) or operation.operation != OperationType.MUTATION:
        return False
    name = operation.name.value if operation.name else None
    if operation.directives or (operation_name is not None and name != operation_name):
        return False
    variables = {
        d.variable.name.value: print_ast(d.type)
        for d in operation.variable_definitions or ()
        if d.default_value is None and not d.directives
    }
    if variables != _LOG_PREDICTIONS_VARIABLES or len(operation.variable_definitions or ()) != len(variables):
        return False
    [selected] = operation.selection_set.selections or [None]
    if not _plain_field(selected, "logPredictions"):
        return False
    assert isinstance(selected, FieldNode)
    arguments = {a.name.value: a.value for a in selected.arguments or ()}
    if len(arguments) != len(selected.arguments or ()) or set(arguments) != set(_LOG_PREDICTIONS_VARIABLES):
        return False
    if not all(isinstance(v, VariableNode) and v.name.value == name for name, v in arguments.items()):
        return False
    answered = list(selected.selection_set.selections) if selected.selection_set else []
    return (
        len(answered) == 1 and _plain_field(answered[0], "warnings") and not cast(FieldNode, answered[0]).selection_set
    )


def _plain_field(node: Any, name: str) -> bool:
    return isinstance(node, FieldNode) and node.name.value == name and node.alias is None and not node.directives


class LogPredictionsFastPath:
    """Pure ASGI middleware: a logPredictions POST whose batch fits the version schema is stored without
    strawberry; the answer is the one strawberry would give. Any other request, and any batch that needs
    warnings or an error, is passed on (its body replayed) to the GraphQL router."""

    def __init__(self, app: ASGIApp, store: AporiaStore) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _is_json_post(scope, GRAPHQL_PATH):
            await self.app(scope, receive, send)
            return
        receive, body = await _buffered(receive)
        answer = await anyio.to_thread.run_sync(self.log, body)
        if answer is None:
            await self.app(scope, receive, send)
            return
        await _send_json(send, answer)

    def log(self, body: bytes) -> bytes | None:
        """The answer to a logPredictions request stored on the fast path, or None to let strawberry answer."""
        try:
            request = _LOG_REQUEST.decode(body)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return None
        if not is_log_predictions(request.query, request.operationName):
            return None
        v = request.variables
        predictions = bytes(v.predictions)
        if not predictions.startswith(b"["):  # GraphQL would take a single fragment as a list of one
            return None
        try:
            warnings = self.store.log_fragments_json(v.modelId, v.modelVersion, v.environment, predictions)
        except StoreError:
            return None  # strawberry words it as a GraphQL error, as always
        if warnings is None:
            return None
        return orjson.dumps({"data": {"logPredictions": {"warnings": warnings}}})


def _content_type(scope: Scope) -> bytes:
    return next((v for k, v in scope["headers"] if k == b"content-type"), b"").lower()


def _is_json_post(scope: Scope, path: str) -> bool:
    return (
        scope["type"] == "http"
        and scope["method"] == "POST"
        and scope["path"] == path
        and _content_type(scope).startswith(b"application/json")
    )


async def _send_json(send: Send, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


_NULL = msgspec.Raw(b"null")


class _CountedFragment(msgspec.Struct, gc=False):
    # Every other part of a fragment is skipped unread.
    id: str
    predictions: msgspec.Raw = _NULL
    actuals: msgspec.Raw = _NULL


_COUNTED_FRAGMENTS = msgspec.json.Decoder(list[_CountedFragment])
_Stream = tuple[str, str, str]  # model id, version, environment


class CountingSink:
    """Pure ASGI middleware of `--sink count`, for benchmarks: a logPredictions batch is answered once the ids of
    its fragments are counted, and nothing is stored, so the sink takes fragments many times faster than a client
    sends them and a benchmark's figure is the client's. `/local/fragments/count` answers from these counts
    (distinct ids with predictions, with actuals, in all), by model, version and environment; `/local/reset`
    clears them. Anything else, a batch this cannot read among it, goes on to the server as without it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._predicted: defaultdict[_Stream, set[str]] = defaultdict(set)
        self._actual: defaultdict[_Stream, set[str]] = defaultdict(set)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] == "/local/fragments/count":
            await _send_json(send, orjson.dumps(self.count(parse_qs(scope["query_string"].decode()))))
            return
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/local/reset":
            with self._lock:
                self._predicted.clear()
                self._actual.clear()
        if not _is_json_post(scope, GRAPHQL_PATH):
            await self.app(scope, receive, send)
            return
        receive, body = await _buffered(receive)
        answer = await anyio.to_thread.run_sync(self.log, body)
        if answer is None:
            await self.app(scope, receive, send)
            return
        await _send_json(send, answer)

    def log(self, body: bytes) -> bytes | None:
        try:
            request = _LOG_REQUEST.decode(body)
            if not is_log_predictions(request.query, request.operationName):
                return None
            fragments = _COUNTED_FRAGMENTS.decode(request.variables.predictions)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return None
        v = request.variables
        stream = (v.modelId, v.modelVersion, v.environment)
        with self._lock:
            predicted, actual = self._predicted[stream], self._actual[stream]
            for fragment in fragments:
                if fragment.predictions != _NULL:
                    predicted.add(fragment.id)
                if fragment.actuals != _NULL:
                    actual.add(fragment.id)
        return b'{"data":{"logPredictions":{"warnings":[]}}}'

    def count(self, query: dict[str, list[str]]) -> dict[str, int]:
        wanted = [query.get(name, [None])[0] for name in ("model_id", "model_version", "environment")]
        predicted: set[str] = set()
        actual: set[str] = set()
        with self._lock:
            for stream in self._predicted.keys() | self._actual.keys():
                if all(value is None or value == part for value, part in zip(wanted, stream, strict=True)):
                    predicted |= self._predicted.get(stream, set())
                    actual |= self._actual.get(stream, set())
        return {"total": len(predicted | actual), "with_predictions": len(predicted), "with_actuals": len(actual)}


# REST


def _validation_detail(exc: RequestValidationError) -> str:
    error = exc.errors()[0]
    where, *loc = error["loc"]
    if error["type"] == "json_invalid":
        return "The request body is not valid JSON."
    if not loc:
        return f"The request {where} is missing or not an object: {error['msg']}."
    return f"Invalid request {where}: field {'.'.join(str(p) for p in loc)!r}: {error['msg']}."


def _rest_router(store: AporiaStore) -> APIRouter:
    router = APIRouter(prefix="/v1beta")

    @router.get("/capabilities/")
    def capabilities() -> dict[str, Any]:
        return {"is_field_schema_supported": True}

    @router.post("/models", status_code=201)
    def create_model(body: ModelBody) -> dict[str, Any]:
        store.create_model(_body(body))
        return {"id": body.id}

    @router.get("/models")
    def list_models() -> list[dict[str, Any]]:
        return store.list_models()

    @router.delete("/models/{model_id}")
    def delete_model(model_id: str) -> dict[str, Any]:
        store.delete_model(model_id)
        return {"id": model_id}

    @router.post("/models/{model_id}/versions", status_code=201)
    def create_version(model_id: str, body: VersionBody) -> dict[str, Any]:
        store.create_version(model_id, _body(body))
        return {"id": model_id, "version": body.name}

    @router.get("/models/{model_id}/versions")
    def list_versions(model_id: str) -> list[dict[str, Any]]:
        return store.list_versions(model_id)

    @router.post("/models/{model_id}/versions/{version}/datasets", status_code=201)
    def connect_dataset(model_id: str, version: str, body: DatasetBody) -> dict[str, Any]:
        store.upsert_dataset(model_id, version, _body(body))
        return {"id": model_id, "version": version, "dataset": body.name}

    @router.get("/models/{model_id}/versions/{version}/datasets")
    def list_datasets(model_id: str, version: str) -> list[dict[str, Any]]:
        return store.list_datasets(model_id, version)

    @router.post("/models/{model_id}/versions/{version}/datasets_sync")
    def datasets_sync(model_id: str, version: str, enabled: bool) -> dict[str, Any]:
        datasets = store.set_sync(model_id, version, enabled)
        return {"id": model_id, "version": version, "enabled": enabled, "datasets": datasets}

    @router.get("/models/{model_id}/versions/{version}/sync_status/{dataset}")
    def sync_status(model_id: str, version: str, dataset: str) -> dict[str, Any]:
        return store.sync_status(model_id, version, dataset)

    return router


def _local_router(store: AporiaStore, faults: FaultPlan) -> APIRouter:
    router = APIRouter(prefix="/local")

    @router.get("/fragments/count")
    def count_fragments(selection: Annotated[FragmentFilter, Depends()]) -> dict[str, int]:
        return store.count_fragments(selection)

    @router.get("/fragments")
    def list_fragments(
        selection: Annotated[FragmentFilter, Depends()],
        limit: int = QueryParam(default=1000, ge=1, le=100_000),
        offset: int = QueryParam(default=0, ge=0),
    ) -> list[dict[str, Any]]:
        return store.list_fragments(selection, limit, offset)

    @router.post("/faults", status_code=201)
    def add_fault(body: FaultBody) -> dict[str, Any]:
        return {"faults": faults.add(Fault(body.path, body.status, body.count, body.delay_seconds, body.operation))}

    @router.delete("/faults")
    def clear_faults() -> dict[str, int]:
        return {"cleared": faults.clear()}

    @router.post("/reset")
    def reset() -> dict[str, bool]:
        """Wipe all models, versions, datasets and fragments, and clear injected faults."""
        store.reset()
        faults.clear()
        return {"reset": True}

    return router


class FastJSONGraphQLRouter(GraphQLRouter[Any, Any]):
    """strawberry's router with orjson: parsing batches of fragments dominates ingest with the stdlib."""

    def decode_json(self, data: str | bytes) -> object:
        return orjson.loads(data)

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)


SINKS = ("store", "count")


def create_app(db_path: str, token: str, sink: str = "store") -> FastAPI:
    store = AporiaStore(db_path)
    faults = FaultPlan()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        store.close()

    app = FastAPI(title="Local Aporia API", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.store = store

    @app.exception_handler(StoreError)
    async def store_error(request: Request, exc: StoreError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_detail(exc)}, status_code=422)

    async def graphql_context() -> dict[str, Any]:
        return {"store": store}

    app.include_router(_rest_router(store))
    app.include_router(_local_router(store, faults))
    app.include_router(
        FastJSONGraphQLRouter(SCHEMA, path=GRAPHQL_PATH, context_getter=graphql_context, graphql_ide=None)
    )
    # Added last, the guard runs first: tokens and injected faults apply to the fast path too.
    app.add_middleware(LogPredictionsFastPath, store=store)
    if sink == "count":
        app.add_middleware(CountingSink)
    app.add_middleware(GuardMiddleware, token=token, faults=faults)
    return app


def serve(host: str, port: int, db_path: str, token: str, sink: str = "store") -> None:
    uvicorn.run(create_app(db_path, token, sink), host=host, port=port, log_level="warning")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the local Aporia API (REST + GraphQL) over SQLite.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", required=True, help="SQLite database file (created if missing)")
    parser.add_argument("--token", required=True, help="the API token clients must send as a Bearer token")
    parser.add_argument("--sink", choices=SINKS, default="store", help="store fragments, or count their ids only")
    args = parser.parse_args(argv)
    serve(args.host, args.port, args.db, args.token, args.sink)


if __name__ == "__main__":
    main()
