"""The CEL engine (``common-expression-language``), imported without its interactive shell,
and what reading expression text needs of CEL's syntax: where its string literals are.

The package's ``__init__`` also imports ``cel.cli``, a REPL built on prompt_toolkit that a
worker never uses and that took about 0.4 s of each worker's start.
"""

from __future__ import annotations

import re
import sys
import types

_SHELL = "cel.cli"

if "cel" not in sys.modules and _SHELL not in sys.modules:
    # An empty stand-in: the package's `from . import cli` takes it instead of the shell.
    sys.modules[_SHELL] = types.ModuleType(_SHELL)
    import cel

    # Whoever imports the shell itself later gets the real one.
    del sys.modules[_SHELL], cel.cli
else:
    import cel

#: A single- or double-quoted CEL string literal (triple quotes and raw strings aside).
STRING_LITERAL = re.compile(r"""'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*\"""")


def mask_string_literals(expression: str) -> str:
    """``expression`` with its string literals blanked, the same length, so names found in
    it are never text inside a literal and their positions hold in the original."""
    return STRING_LITERAL.sub(lambda m: "_" * len(m.group(0)), expression)


__all__ = ["STRING_LITERAL", "cel", "mask_string_literals"]
