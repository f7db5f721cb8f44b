"""The real Shopify Admin GraphQL schema (2026-10), loaded once per process, and validation of
incoming documents against it with errors phrased the way Shopify (graphql-ruby) phrases them.
"""

from __future__ import annotations

import functools
import gzip
import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    GraphQLError,
    GraphQLSchema,
    TypeInfo,
    TypeInfoVisitor,
    Visitor,
    build_client_schema,
    parse,
    validate,
    visit,
)

SCHEMA_VERSION = "2026-10"
SCHEMA_PATH = Path(__file__).parent / "schema" / f"admin_{SCHEMA_VERSION}.json.gz"

_schema_lock = threading.Lock()
_schema: GraphQLSchema | None = None


def admin_schema() -> GraphQLSchema:
    """The Admin API schema; built on first use (about a second) and then shared."""
    global _schema
    with _schema_lock:
        if _schema is None:
            with gzip.open(SCHEMA_PATH, "rt", encoding="utf-8") as handle:
                introspection = json.load(handle)
            schema = build_client_schema(introspection["data"])
            # Shopify's schema trips graphql-core's interface/deprecation consistency check;
            # the schema is authoritative, so the check is switched off rather than the data
            # edited.
            schema._validation_errors = []
            _schema = schema
        return _schema


@dataclass(frozen=True)
class CheckedDocument:
    """A parsed document and what validation said about it."""

    document: DocumentNode | None
    errors: tuple[dict[str, Any], ...]
    # "Type.field" names of deprecated fields the document selects (Shopify still answers
    # them; the simulator counts them so tests can notice drift).
    deprecated: tuple[str, ...]


def _locations(error: GraphQLError) -> list[dict[str, int]]:
    return [{"line": loc.line, "column": loc.column} for loc in error.locations or []]


# graphql-core words its validation messages differently from graphql-ruby, which Shopify
# runs; clients match on Shopify's wording and codes, so the common ones are translated.
_TRANSLATIONS: tuple[tuple[re.Pattern[str], Any], ...] = (
    (
        re.compile(r"Cannot query field '(?P<field>\w+)' on type '(?P<type>\w+)'\."),
        lambda m: (
            f"Field '{m['field']}' doesn't exist on type '{m['type']}'",
            {"code": "undefinedField", "typeName": m["type"], "fieldName": m["field"]},
        ),
    ),
    (
        re.compile(r"Unknown argument '(?P<arg>\w+)' on field '(?P<type>\w+)\.(?P<field>\w+)'\."),
        lambda m: (
            f"Field '{m['field']}' doesn't accept argument '{m['arg']}'",
            {
                "code": "argumentNotAccepted",
                "name": m["field"],
                "typeName": "Field",
                "argumentName": m["arg"],
            },
        ),
    ),
    (
        re.compile(
            r"Field '(?P<field>\w+)' argument '(?P<arg>\w+)' of type '[^']+' is required, "
            r"but it was not provided\."
        ),
        lambda m: (
            f"Field '{m['field']}' is missing required arguments: {m['arg']}",
            {
                "code": "missingRequiredArguments",
                "className": "Field",
                "name": m["field"],
                "arguments": m["arg"],
            },
        ),
    ),
    (
        re.compile(r"Variable '\$(?P<var>\w+)' is not defined(?: by operation '(?P<op>\w+)')?\."),
        lambda m: (
            f"Variable ${m['var']} is used by {m['op'] or 'anonymous query'} but not declared",
            {"code": "variableNotDefined", "variableName": m["var"]},
        ),
    ),
    (
        re.compile(r"Variable '\$(?P<var>\w+)' is never used(?: in operation '(?P<op>\w+)')?\."),
        lambda m: (
            f"Variable ${m['var']} is declared by {m['op'] or 'anonymous query'} but not used",
            {"code": "variableNotUsed", "variableName": m["var"]},
        ),
    ),
    (
        re.compile(r"Field '(?P<field>\w+)' of type '(?P<type>[^']+)' must have a selection"),
        lambda m: (
            f"Field must have selections (field '{m['field']}' returns "
            f"{m['type'].strip('[]!')} but has no selections. Did you mean "
            f"'{m['field']} {{ ... }}'?)",
            {"code": "selectionMismatch", "nodeName": f"field '{m['field']}'"},
        ),
    ),
    (
        re.compile(
            r"Field '(?P<field>\w+)' must not have a selection since type '(?P<type>[^']+)'"
        ),
        lambda m: (
            f"Selections can't be made on scalars (field '{m['field']}' returns "
            f"{m['type'].strip('[]!')} but has selections)",
            {"code": "selectionMismatch", "nodeName": f"field '{m['field']}'"},
        ),
    ),
    (
        re.compile(r"Unknown type '(?P<type>\w+)'\."),
        lambda m: (
            f"No such type {m['type']}, so it can't be a fragment condition",
            {"code": "undefinedType", "typeName": m["type"]},
        ),
    ),
)


def shopify_validation_error(error: GraphQLError) -> dict[str, Any]:
    """One validation error as Shopify would put it in the ``errors`` list."""
    message = error.message
    extensions: dict[str, Any] = {"code": "validationFailed"}
    for pattern, translate in _TRANSLATIONS:
        match = pattern.match(message)
        if match:
            message, extensions = translate(match)
            break
    return {"message": message, "locations": _locations(error), "extensions": extensions}


class _DeprecationCollector(Visitor):
    def __init__(self, type_info: TypeInfo) -> None:
        super().__init__()
        self.type_info = type_info
        self.found: list[str] = []

    def enter_field(self, node: FieldNode, *_rest: object) -> None:
        field = self.type_info.get_field_def()
        parent = self.type_info.get_parent_type()
        if field is not None and parent is not None and field.deprecation_reason:
            self.found.append(f"{parent.name}.{node.name.value}")


@functools.lru_cache(maxsize=512)
def check_document(source: str) -> CheckedDocument:
    """Parse and validate ``source`` against the real schema.

    Cached by text: clients send the same few documents over and over, and validating against
    a schema this size costs ~10 ms.
    """
    schema = admin_schema()
    try:
        document = parse(source)
    except GraphQLError as error:
        detail = error.message.removeprefix("Syntax Error: ")
        return CheckedDocument(
            None,
            (
                {
                    "message": f"syntax error, {detail}",
                    "locations": _locations(error),
                    "extensions": {"code": "parseError"},
                },
            ),
            (),
        )
    errors = validate(schema, document)
    if errors:
        return CheckedDocument(
            document, tuple(shopify_validation_error(error) for error in errors), ()
        )
    type_info = TypeInfo(schema)
    collector = _DeprecationCollector(type_info)
    visit(document, TypeInfoVisitor(type_info, collector))
    return CheckedDocument(document, (), tuple(collector.found))
