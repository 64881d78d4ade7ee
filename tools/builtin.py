"""Built-in server-side tools a profile may enable by name."""

from __future__ import annotations

import ast
import operator
from datetime import UTC, datetime

from tako.tools.registry import PythonTool, python_tool

_OPS = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.Pow: operator.pow, ast.Mod: operator.mod,
    ast.USub: operator.neg, ast.UAdd: operator.pos, ast.FloorDiv: operator.floordiv,
}


def _eval(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        if isinstance(node.op, ast.Pow) and abs(_eval(node.right)) > 64:
            raise ValueError("exponent too large")
        return float(_OPS[type(node.op)](_eval(node.left), _eval(node.right)))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
        return float(_OPS[type(node.op)](_eval(node.operand)))
    raise ValueError("only arithmetic is allowed")


@python_tool(
    "calculator",
    "Evaluate an arithmetic expression (+ - * / // % ** and parentheses).",
    {"type": "object", "properties": {"expression": {"type": "string"}},
     "required": ["expression"]},
)
def calculator(expression: str) -> str:
    try:
        value = _eval(ast.parse(expression, mode="eval"))
    except (ValueError, SyntaxError, ZeroDivisionError) as exc:
        return f"error: {exc}"
    return str(int(value)) if float(value).is_integer() else str(value)


@python_tool(
    "current_time",
    "The current UTC time in ISO 8601.",
    {"type": "object", "properties": {}},
)
def current_time() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


BUILTIN: dict[str, PythonTool] = {t.name: t for t in (calculator, current_time)}
