"""A small GraphQL executor for documents already validated against the real schema.

graphql-core's executor is exact but costs ~35 ms for a page of 250 orders, which would make a
million-order benchmark measure the simulator instead of the client. This one walks the same
selection sets over plain dicts whose leaves are already serialised the way Shopify serialises
them (gids, decimal strings, upper-case enums), and is used for every request and for bulk
JSONL lines. Behaviour it shares with the spec: aliases, fragments (named and inline, on
interfaces), ``@skip``/``@include``, ``__typename``, argument defaults and coercion, errors with
``path`` and null propagation through non-null fields. A field the simulator has no data for
is an error naming it (rather than a silent null) so a missing simulation is never mistaken for
Shopify's answer.

Sources are mappings (``source.get(name)``) or objects (``getattr``); a callable value is
resolved as ``value(info, **arguments)``, graphql-core's default-resolver convention, so the
same root value also works under :func:`graphql.execute`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DirectiveNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLAbstractType,
    GraphQLIncludeDirective,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLSchema,
    GraphQLSkipDirective,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    is_abstract_type,
    is_leaf_type,
    is_object_type,
)
from graphql.execution.values import get_argument_values, get_directive_values

_MISSING = object()


class FieldError(Exception):
    """Raised by a resolver: becomes an entry in ``errors`` and a null in ``data``."""

    def __init__(self, message: str, code: str | None = None, **extensions: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extensions: dict[str, Any] = dict(extensions)
        if code is not None:
            self.extensions = {"code": code, **self.extensions}


# A response path as nested (parent, key) pairs: extending it per field costs one small tuple,
# and it is flattened only when an error needs it.
Path = tuple[Any, str | int] | None
Completer = Callable[[Any, Path, bool], Any]


class _Null(Exception):
    """A null reached a non-null position: the nearest nullable parent becomes null."""


@dataclass
class Info:
    """What resolvers receive as ``info`` (a subset of graphql-core's ``GraphQLResolveInfo``)."""

    context: Any
    field_name: str
    path: list[str | int]
    parent_type: GraphQLObjectType


FieldGroups = dict[str, list[FieldNode]]


@dataclass(frozen=True, slots=True)
class _Field:
    """One response key of a compiled selection."""

    key: str
    name: str
    nodes: list[FieldNode]
    parent: GraphQLObjectType
    arguments: dict[str, Any]
    complete: Completer | None  # None: a leaf, returned as stored
    non_null: bool
    typename: bool


@dataclass
class Executor:
    schema: GraphQLSchema
    fragments: dict[str, FragmentDefinitionNode]
    variables: Any  # graphql-core VariableValues
    context: Any = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    _groups: dict[tuple[str, tuple[int, ...]], FieldGroups] = field(default_factory=dict)
    _arguments: dict[int, dict[str, Any]] = field(default_factory=dict)
    _plans: dict[tuple[str, tuple[int, ...]], list[_Field]] = field(default_factory=dict)
    _completers: dict[tuple[str, tuple[int, ...]], Completer | None] = field(default_factory=dict)

    # -- field collection --

    def _included(self, node: FieldNode | FragmentSpreadNode | InlineFragmentNode) -> bool:
        directives: tuple[DirectiveNode, ...] = tuple(node.directives or ())
        if not directives:
            return True
        skip = get_directive_values(GraphQLSkipDirective, node, self.variables)
        if skip and skip.get("if") is True:
            return False
        include = get_directive_values(GraphQLIncludeDirective, node, self.variables)
        return not (include and include.get("if") is False)

    def _applies(self, condition: str | None, runtime: GraphQLObjectType) -> bool:
        if condition is None or condition == runtime.name:
            return True
        target = self.schema.get_type(condition)
        return bool(
            target is not None
            and is_abstract_type(target)
            and self.schema.is_sub_type(target, runtime)  # type: ignore[arg-type]
        )

    def _collect(
        self,
        runtime: GraphQLObjectType,
        selection_set: SelectionSetNode,
        groups: FieldGroups,
        visited: set[str],
    ) -> None:
        for selection in selection_set.selections:
            if not self._included(selection):  # type: ignore[arg-type]
                continue
            if isinstance(selection, FieldNode):
                key = selection.alias.value if selection.alias else selection.name.value
                groups.setdefault(key, []).append(selection)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                if self._applies(condition.name.value if condition else None, runtime):
                    self._collect(runtime, selection.selection_set, groups, visited)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.fragments.get(name)
                if name in visited or fragment is None:
                    continue
                visited.add(name)
                if self._applies(fragment.type_condition.name.value, runtime):
                    self._collect(runtime, fragment.selection_set, groups, visited)

    def collect(
        self, runtime: GraphQLObjectType, selection_sets: Iterable[SelectionSetNode]
    ) -> FieldGroups:
        sets = tuple(selection_sets)
        # Cached per (type, selection sets): every node of a page shares one plan.
        cache_key = (runtime.name, tuple(id(s) for s in sets))
        groups = self._groups.get(cache_key)
        if groups is None:
            groups = {}
            visited: set[str] = set()
            for selection_set in sets:
                self._collect(runtime, selection_set, groups, visited)
            self._groups[cache_key] = groups
        return groups

    def arguments(self, parent: GraphQLObjectType, node: FieldNode) -> dict[str, Any]:
        cached = self._arguments.get(id(node))
        if cached is None:
            definition = parent.fields[node.name.value]
            cached = (
                get_argument_values(definition, node, self.variables) if definition.args else {}
            )
            self._arguments[id(node)] = cached
        return cached

    # -- execution --

    def _error(
        self,
        message: str,
        nodes: list[FieldNode],
        path: Path,
        extensions: dict[str, Any] | None = None,
    ) -> None:
        entry: dict[str, Any] = {"message": message}
        locations = [
            {"line": loc.line, "column": loc.column}
            for node in nodes[:1]
            if node.loc is not None
            for loc in [node.loc.source.get_location(node.loc.start)]
        ]
        if locations:
            entry["locations"] = locations
        entry["path"] = flatten(path)
        if extensions:
            entry["extensions"] = extensions
        self.errors.append(entry)

    def execute_operation(
        self, operation: OperationDefinitionNode, root: GraphQLObjectType, source: Any
    ) -> dict[str, Any] | None:
        try:
            return self.run(self.plan(root, (operation.selection_set,)), source, None)
        except _Null:
            return None

    def execute_fields(
        self, parent: GraphQLObjectType, source: Any, groups: FieldGroups, path: Path = None
    ) -> dict[str, Any]:
        """Execute already-collected ``groups`` on ``source`` (used by :func:`select`)."""
        return self.run(self._compile(parent, groups), source, path)

    def complete(
        self,
        return_type: GraphQLOutputType,
        nodes: list[FieldNode],
        value: Any,
        path: Path = None,
    ) -> Any:
        """Complete ``value`` as ``return_type`` with the sub-selections of ``nodes``."""
        cache_key = (str(return_type), tuple(id(n) for n in nodes))
        if cache_key not in self._completers:
            self._completers[cache_key] = self._completer(return_type, tuple(nodes))
        completer = self._completers[cache_key]
        if completer is None:
            return value
        try:
            return completer(value, path, False)
        except _Null:
            return None

    # Plans: selection sets compiled once per runtime type into a list of _Field, and output
    # types into closures, so completing a million records does no repeated analysis.

    def plan(
        self, runtime: GraphQLObjectType, selection_sets: tuple[SelectionSetNode, ...]
    ) -> list[_Field]:
        cache_key = (runtime.name, tuple(id(s) for s in selection_sets))
        plan = self._plans.get(cache_key)
        if plan is None:
            plan = self._compile(runtime, self.collect(runtime, selection_sets))
            self._plans[cache_key] = plan
        return plan

    def _compile(self, parent: GraphQLObjectType, groups: FieldGroups) -> list[_Field]:
        plan: list[_Field] = []
        for key, nodes in groups.items():
            name = nodes[0].name.value
            if name == "__typename":
                plan.append(_Field(key, name, nodes, parent, {}, None, False, True))
                continue
            definition = parent.fields[name]
            return_type = definition.type
            non_null = isinstance(return_type, GraphQLNonNull)
            inner = return_type.of_type if non_null else return_type  # type: ignore[union-attr]
            plan.append(
                _Field(
                    key,
                    name,
                    nodes,
                    parent,
                    self.arguments(parent, nodes[0]),
                    self._completer(inner, tuple(nodes)),
                    non_null,
                    False,
                )
            )
        return plan

    def _completer(
        self, return_type: GraphQLOutputType, nodes: tuple[FieldNode, ...]
    ) -> Completer | None:
        """A function completing values of ``return_type``; None means "as is" (leaves)."""
        if isinstance(return_type, GraphQLNonNull):
            inner = self._completer(return_type.of_type, nodes)
            error = self._error
            node_list = list(nodes)

            def non_null(value: Any, path: Path, reported: bool) -> Any:
                completed = value if inner is None else inner(value, path, reported)
                if completed is None:
                    if not reported and value is None:
                        error("Cannot return null for non-nullable field", node_list, path)
                    raise _Null
                return completed

            return non_null
        if isinstance(return_type, GraphQLList):
            item = self._completer(return_type.of_type, nodes)

            def complete_list(value: Any, path: Path, reported: bool) -> Any:
                if value is None:
                    return None
                if item is None:
                    return list(value)
                try:
                    return [item(entry, (path, index), False) for index, entry in enumerate(value)]
                except _Null:
                    return None

            return complete_list
        if is_leaf_type(return_type):
            # Values are stored already serialised the way Shopify serialises them.
            return None
        selection_sets = tuple(n.selection_set for n in nodes if n.selection_set)
        run = self.run
        if is_object_type(return_type):
            runtime: GraphQLObjectType = return_type  # type: ignore[assignment]
            plans: list[list[_Field]] = []

            def complete_object(value: Any, path: Path, reported: bool) -> Any:
                if value is None:
                    return None
                if not plans:  # compiled on first use: types may refer to themselves
                    plans.append(self.plan(runtime, selection_sets))
                try:
                    return run(plans[0], value, path)
                except _Null:
                    return None

            return complete_object

        def complete_abstract(value: Any, path: Path, reported: bool) -> Any:
            if value is None:
                return None
            runtime = self.resolve_type(return_type, value)  # type: ignore[arg-type]
            try:
                return run(self.plan(runtime, selection_sets), value, path)
            except _Null:
                return None

        return complete_abstract

    def run(self, plan: list[_Field], source: Any, path: Path) -> dict[str, Any]:
        result: dict[str, Any] = {}
        is_mapping = type(source) is dict or isinstance(source, Mapping)
        get = source.get if is_mapping else _attribute_getter(source)
        for field_plan in plan:
            key = field_plan.key
            if field_plan.typename:
                result[key] = field_plan.parent.name
                continue
            value = get(field_plan.name, _MISSING)
            reported = False
            if value is _MISSING:
                self._error(
                    f"fakeshop does not simulate {field_plan.parent.name}.{field_plan.name}",
                    field_plan.nodes,
                    (path, key),
                    {"code": "NOT_SIMULATED"},
                )
                value, reported = None, True
            elif callable(value):
                try:
                    value = value(
                        Info(
                            self.context, field_plan.name, flatten((path, key)), field_plan.parent
                        ),
                        **field_plan.arguments,
                    )
                except FieldError as problem:
                    self._error(problem.message, field_plan.nodes, (path, key), problem.extensions)
                    value, reported = None, True
            if field_plan.complete is not None:
                value = field_plan.complete(value, (path, key), reported)
            if value is None and field_plan.non_null:
                if not reported:
                    self._error(
                        "Cannot return null for non-nullable field "
                        f"{field_plan.parent.name}.{field_plan.name}",
                        field_plan.nodes,
                        (path, key),
                    )
                raise _Null
            result[key] = value
        return result

    def resolve_type(self, abstract: GraphQLAbstractType, value: Any) -> GraphQLObjectType:
        name = value.get("__typename") if isinstance(value, Mapping) else None
        runtime = self.schema.get_type(name) if name else None
        if runtime is None or not is_object_type(runtime):
            raise FieldError(f"fakeshop: cannot tell the type of a {abstract.name} value")
        return runtime  # type: ignore[return-value]


def _attribute_getter(source: Any) -> Callable[[str, Any], Any]:
    return lambda name, default: getattr(source, name, default)


def flatten(path: Path) -> list[str | int]:
    """A path kept as nested (parent, key) pairs (cheap to extend) as a list."""
    keys: list[str | int] = []
    while path is not None:
        path, key = path
        keys.append(key)
    keys.reverse()
    return keys
