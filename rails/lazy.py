"""Names of a package imported when first asked for (PEP 562), so importing one submodule of a
rail does not import all of them (a daemon's startup, issue 13)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy(package: str, where: Mapping[str, str],
         namespace: dict[str, Any]) -> Callable[[str], Any]:
    """The module ``__getattr__`` of `package`: `where` says which submodule defines each name;
    a name found is kept in `namespace` (the package's globals) so it is looked up once."""

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = namespace[name] = getattr(importlib.import_module(module), name)
        return value

    return __getattr__
