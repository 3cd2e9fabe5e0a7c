"""The CEL engine (``common-expression-language``), imported without its interactive shell.

The package's ``__init__`` also imports ``cel.cli``, a REPL built on prompt_toolkit that a
worker never uses and that took about 0.4 s of each worker's start.
"""

from __future__ import annotations

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

__all__ = ["cel"]
