"""Callbacks run as the simulator answers GraphQL requests: the deterministic way for a test
to make something happen "between two pages" of a backfill (change records, deliver
webhooks) without sleeping or racing.

A hook runs after the request's answer has been computed (its data is a snapshot of the store
at that moment) and before the answer is sent, so whatever the hook changes is newer than
the page the client is about to receive: the most adversarial moment for a consumer that
must not let an older page overwrite a newer webhook. The client waits for the hook to end.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from graphql import GraphQLError, OperationDefinitionNode, parse

log = logging.getLogger("fakeshop.hooks")


@dataclass(frozen=True)
class GraphQLRequest:
    """What a hook learns about the request being answered."""

    number: int  # 1-based, per store: answered GraphQL requests so far, this one included
    query: str
    variables: Mapping[str, Any]
    operation_name: str | None
    status: int  # of the answer about to be sent
    body: Mapping[str, Any]  # the answer about to be sent

    @cached_property
    def root_fields(self) -> tuple[str, ...]:
        """Top-level fields of the executed operation (``("orders",)`` for a page)."""
        try:
            document = parse(self.query)
        except GraphQLError:
            return ()
        for definition in document.definitions:
            if isinstance(definition, OperationDefinitionNode) and (
                self.operation_name is None
                or (definition.name is not None and definition.name.value == self.operation_name)
            ):
                return tuple(
                    selection.name.value  # type: ignore[attr-defined]
                    for selection in definition.selection_set.selections
                    if hasattr(selection, "name")
                )
        return ()

    def page_of(self, resource: str) -> bool:
        """True for a connection page of ``resource`` that returned data."""
        data = self.body.get("data") if isinstance(self.body, Mapping) else None
        return (
            resource in self.root_fields
            and isinstance(data, Mapping)
            and isinstance(data.get(resource), Mapping)
        )


RequestHook = Callable[[GraphQLRequest], None]


class RequestHooks:
    """Thread-safe: tests add hooks on their thread; the server runs them on its own.

    A hook that raises does not break the response; the exception is kept in ``errors`` for
    the test to assert on (an assertion inside a hook must not vanish).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hooks: list[RequestHook] = []
        self._count = 0
        self.errors: list[BaseException] = []

    def add(self, hook: RequestHook) -> None:
        with self._lock:
            self._hooks.append(hook)

    def remove(self, hook: RequestHook) -> None:
        with self._lock:
            if hook in self._hooks:
                self._hooks.remove(hook)

    def clear(self) -> None:
        with self._lock:
            self._hooks.clear()
            self.errors.clear()

    def __bool__(self) -> bool:
        with self._lock:
            return bool(self._hooks)

    def next_number(self) -> int:
        with self._lock:
            self._count += 1
            return self._count

    def run(self, request: GraphQLRequest) -> None:
        with self._lock:
            hooks = list(self._hooks)
        for hook in hooks:
            try:
                hook(request)
            except Exception as exc:
                log.exception("fakeshop hook failed on request %s", request.number)
                with self._lock:
                    self.errors.append(exc)
