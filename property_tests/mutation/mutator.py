"""Mutants of a Python source file (edge_flash/kernel.py), made from its AST.

``generate_mutants(source)`` walks the AST in a fixed order and, at each site
an operator applies to, yields one ``Mutant``: the same source with exactly
that one expression rewritten. The rewrite is spliced into the original text
(so every other line, comment and line number stays as it was) and then
checked: the spliced text must parse to exactly the expected mutated AST.

A mutant's id reads ``L<line>C<col>:<before>-><after>`` with the operator's
own token, e.g. ``L198C35:-->+`` (a ``-`` became ``+`` at line 198, column
35; ``is-not`` stands for ``is not``: ids have no spaces); it stays the same
while the kernel's text is unchanged.

Operators (``OPERATORS``): arithmetic swap (``+``/``-``, ``*``/``/``,
``//`` -> ``/``), comparison swap and boundary (``<``/``<=``, ``>``/``>=``,
``==``/``!=``, ``is``/``is not``), ``and``/``or``, integer constants +-1,
float constants x(1 + 1e-3), ``True``/``False``, ``min``/``max`` (builtins,
``torch.maximum``/``minimum``, ``amax``/``amin``, ``finfo.min``/``.max``,
``clamp(min=)``/``clamp(max=)``), unary minus removed, slice bounds moved
inward by one.

Not mutated: strings (docstrings and error messages; the one semantic string,
``float("-inf")``, is covered by the causal tests through the mask it
builds), annotations, imports, and the input-validation calls
(``check_*(...)``): they only decide which error text a bad input gets, and
property_tests/test_validation.py owns that.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
from collections.abc import Callable, Iterator

# Each table maps an AST node class to its replacement and the tokens for the id.
_BINOP_SWAPS = {
    ast.Add: (ast.Sub, "+", "-"),
    ast.Sub: (ast.Add, "-", "+"),
    ast.Mult: (ast.Div, "*", "/"),
    ast.Div: (ast.Mult, "/", "*"),
    ast.FloorDiv: (ast.Div, "//", "/"),
}
_COMPARE_SWAPS = {
    ast.Lt: (ast.LtE, "<", "<="),
    ast.LtE: (ast.Lt, "<=", "<"),
    ast.Gt: (ast.GtE, ">", ">="),
    ast.GtE: (ast.Gt, ">=", ">"),
    ast.Eq: (ast.NotEq, "==", "!="),
    ast.NotEq: (ast.Eq, "!=", "=="),
    # Ids carry no spaces, so that `--only ID ...` needs no quoting.
    ast.Is: (ast.IsNot, "is", "is-not"),
    ast.IsNot: (ast.Is, "is-not", "is"),
}
_BOOLOP_SWAPS = {ast.And: (ast.Or, "and", "or"), ast.Or: (ast.And, "or", "and")}
# Names whose call / attribute / keyword has a min-max twin.
_MINMAX_NAMES = {"min": "max", "max": "min"}
_MINMAX_ATTRS = {"maximum": "minimum", "minimum": "maximum", "amax": "amin", "amin": "amax",
                 "min": "max", "max": "min"}  # fmt: skip
# Relative size of the float tweak: far above fp64 rounding (so a mutant is a
# real change) and small enough to be a plausible typo-sized drift.
FLOAT_TWEAK = 1e-3

OPERATORS = ("arith", "compare", "boolop", "int", "float", "bool", "minmax", "unary", "slice")


@dataclasses.dataclass(frozen=True)
class Mutant:
    """One mutation of the source: where, what, and the whole mutated text."""

    id: str  # L<line>C<col>:<before>-><after>
    operator: str  # one of OPERATORS
    line: int
    col: int
    function: str  # enclosing function, or "<module>"
    before: str  # the source text of the mutated expression
    after: str  # the same expression mutated (ast.unparse)
    source: str  # the whole mutated source


@dataclasses.dataclass
class _Site:
    """A candidate rewrite: ``rewrite`` turns a copy of ``node`` into its mutant."""

    node: ast.AST
    function: str
    operator: str
    change: str  # "<before>-><after>" token for the id
    rewrite: Callable[[ast.AST], ast.AST]


def generate_mutants(source: str) -> list[Mutant]:
    """Every mutant of ``source``, in source order (then operator order).

    Raises:
      SyntaxError: ``source`` does not parse.
      RuntimeError: a spliced mutant does not parse to its intended AST (a
        bug of this module; the message names the mutant).
    """
    tree = ast.parse(source)
    line_starts = _line_starts(source)
    mutants = []
    for site in _sites(tree):
        mutated = site.rewrite(copy.deepcopy(site.node))
        mutants.append(_splice(source, line_starts, tree, site, mutated))
    return mutants


def _splice(source: str, line_starts: list, tree: ast.AST, site: _Site, mutated: ast.AST) -> Mutant:
    """The mutant whose text is ``source`` with ``site.node`` replaced by ``mutated``."""
    node = site.node
    start = line_starts[node.lineno - 1] + _char_col(
        source, line_starts, node.lineno, node.col_offset
    )
    end = line_starts[node.end_lineno - 1] + _char_col(
        source, line_starts, node.end_lineno, node.end_col_offset
    )
    after = ast.unparse(mutated)
    # Parentheses never change meaning and keep `a and b` -> `a or b` (or a
    # lower-precedence rewrite) from binding differently in its context.
    # A slice cannot be parenthesized; its bounds are the only thing rewritten there.
    spliced = after if isinstance(node, ast.Slice) else f"({after})"
    text = source[:start] + spliced + source[end:]
    expected = _replace_node(tree, node, mutated)
    if ast.dump(ast.parse(text)) != ast.dump(expected):
        raise RuntimeError(f"mutant at line {node.lineno} ({site.change}) does not splice cleanly")
    return Mutant(
        id=f"L{node.lineno}C{node.col_offset}:{site.change}",
        operator=site.operator,
        line=node.lineno,
        col=node.col_offset,
        function=site.function,
        before=source[start:end],
        after=after,
        source=text,
    )


def _line_starts(source: str) -> list:
    """Character offset of the start of each line."""
    starts, offset = [], 0
    for line in source.splitlines(keepends=True):
        starts.append(offset)
        offset += len(line)
    return starts


def _char_col(source: str, line_starts: list, lineno: int, byte_col: int) -> int:
    """ast's UTF-8 byte column as a character column on that line."""
    line = source[line_starts[lineno - 1] :]
    return len(line.encode("utf-8")[:byte_col].decode("utf-8"))


def _replace_node(tree: ast.AST, target: ast.AST, replacement: ast.AST) -> ast.AST:
    """A copy of ``tree`` with the node ``target`` (by identity) replaced."""

    class _Replace(ast.NodeTransformer):
        def visit(self, node):
            if getattr(node, "_mutation_target", False):
                return replacement
            return self.generic_visit(node)

    target._mutation_target = True  # deepcopy carries the mark to the copy
    try:
        return _Replace().visit(copy.deepcopy(tree))
    finally:
        del target._mutation_target


def _sites(tree: ast.Module) -> Iterator[_Site]:
    """Every candidate rewrite, outside strings, annotations, imports and validation calls."""
    for statement in tree.body:
        yield from _statement_sites(statement, "<module>")


def _statement_sites(statement: ast.stmt, function: str) -> Iterator[_Site]:
    if isinstance(statement, (ast.Import, ast.ImportFrom)):
        return
    if isinstance(statement, ast.FunctionDef):
        # Defaults are mutated; annotations and the docstring (a string) are not.
        for default in statement.args.defaults + statement.args.kw_defaults:
            if default is not None:
                yield from _expression_sites(default, statement.name)
        for inner in statement.body:
            yield from _statement_sites(inner, statement.name)
        return
    if _is_validation_call(statement):
        return
    if isinstance(statement, ast.AnnAssign):
        statement = ast.Assign(targets=[statement.target], value=statement.value)
    for field, value in ast.iter_fields(statement):
        children = value if isinstance(value, list) else [value]
        for child in children:
            if isinstance(child, ast.stmt):
                yield from _statement_sites(child, function)
            elif isinstance(child, ast.expr):
                yield from _expression_sites(child, function)


def _is_validation_call(statement: ast.stmt) -> bool:
    """``check_...(...)`` as a statement: input validation (see the module docstring)."""
    if not (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call)):
        return False
    func = statement.value.func
    return isinstance(func, ast.Name) and func.id.startswith("check_")


def _expression_sites(expression: ast.expr, function: str) -> Iterator[_Site]:
    """Rewrites of ``expression`` and of everything inside it, outer nodes first."""
    for node in _walk_in_order(expression):
        yield from _node_sites(node, function)


def _walk_in_order(node: ast.AST) -> Iterator[ast.AST]:
    """Pre-order walk in field order (ast.walk is breadth-first, which reads badly)."""
    yield node
    for child in ast.iter_child_nodes(node):
        yield from _walk_in_order(child)


def _node_sites(node: ast.AST, function: str) -> Iterator[_Site]:
    for operator, change, rewrite in _rewrites(node):
        yield _Site(node, function, operator, change, rewrite)


def _rewrites(node: ast.AST) -> Iterator[tuple]:
    """(operator, change token, rewrite) for each operator that applies to ``node``."""
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOP_SWAPS:
        new_op, before, after = _BINOP_SWAPS[type(node.op)]
        yield "arith", f"{before}->{after}", _set("op", new_op())
    elif (
        isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _COMPARE_SWAPS
    ):
        new_op, before, after = _COMPARE_SWAPS[type(node.ops[0])]
        yield "compare", f"{before}->{after}", _set("ops", [new_op()])
    elif isinstance(node, ast.BoolOp):
        new_op, before, after = _BOOLOP_SWAPS[type(node.op)]
        yield "boolop", f"{before}->{after}", _set("op", new_op())
    elif isinstance(node, ast.Constant):
        yield from _constant_rewrites(node.value)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        yield "unary", "-x->x", lambda n: n.operand
    elif isinstance(node, ast.Slice):
        yield from _slice_rewrites(node)
    elif isinstance(node, ast.Call):
        yield from _minmax_call_rewrites(node)
    elif isinstance(node, ast.Attribute) and node.attr in _MINMAX_ATTRS:
        twin = _MINMAX_ATTRS[node.attr]
        yield "minmax", f".{node.attr}->.{twin}", _set("attr", twin)


def _set(field: str, value) -> Callable[[ast.AST], ast.AST]:
    def rewrite(node: ast.AST) -> ast.AST:
        setattr(node, field, value)
        return node

    return rewrite


def _constant_rewrites(value) -> Iterator[tuple]:
    if isinstance(value, bool):
        yield "bool", f"{value}->{not value}", _set("value", not value)
    elif isinstance(value, int):
        yield "int", f"{value}->{value + 1}", _set("value", value + 1)
        if value > 0:  # 0 - 1 is a negative literal: -1 is mutated by "unary" instead
            yield "int", f"{value}->{value - 1}", _set("value", value - 1)
    elif isinstance(value, float) and value != 0.0:
        tweaked = value * (1 + FLOAT_TWEAK)
        yield "float", f"{value!r}->{tweaked!r}", _set("value", tweaked)


def _slice_rewrites(node: ast.Slice) -> Iterator[tuple]:
    """Bounds moved inward by one: ``a:b`` -> ``a + 1:b`` and ``a:b - 1``."""
    if node.lower is not None:
        yield "slice", "lower->lower+1", _shift("lower", ast.Add())
    if node.upper is not None:
        yield "slice", "upper->upper-1", _shift("upper", ast.Sub())


def _shift(field: str, op: ast.operator) -> Callable[[ast.AST], ast.AST]:
    def rewrite(node: ast.Slice) -> ast.Slice:
        setattr(node, field, ast.BinOp(left=getattr(node, field), op=op, right=ast.Constant(1)))
        return node

    return rewrite


def _minmax_call_rewrites(node: ast.Call) -> Iterator[tuple]:
    """``min(..)`` <-> ``max(..)`` (builtins) and ``clamp(x, min=)`` <-> ``clamp(x, max=)``."""
    if isinstance(node.func, ast.Name) and node.func.id in _MINMAX_NAMES:
        twin = _MINMAX_NAMES[node.func.id]
        yield "minmax", f"{node.func.id}->{twin}", _rename_func(twin)
    for index, keyword in enumerate(node.keywords):
        if keyword.arg in _MINMAX_NAMES:
            twin = _MINMAX_NAMES[keyword.arg]
            yield "minmax", f"{keyword.arg}=->{twin}=", _rename_keyword(index, twin)


def _rename_func(name: str) -> Callable[[ast.Call], ast.Call]:
    def rewrite(node: ast.Call) -> ast.Call:
        node.func = ast.Name(id=name, ctx=ast.Load())
        return node

    return rewrite


def _rename_keyword(index: int, name: str) -> Callable[[ast.Call], ast.Call]:
    def rewrite(node: ast.Call) -> ast.Call:
        node.keywords[index].arg = name
        return node

    return rewrite


def find_mutant(mutants: list[Mutant], mutant_id: str) -> Mutant | None:
    """The mutant with this id, or None."""
    return next((m for m in mutants if m.id == mutant_id), None)
