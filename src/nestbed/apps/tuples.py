"""NamedTuple for the programs in nodes, without importing typing (~0.13 s of every start of a Python under TCG).

    class Ping(NamedTuple):
        seq: int

mypy reads typing's NamedTuple (TYPE_CHECKING); at run time the class is a collections.namedtuple of the
annotated fields, in order, with the class body's methods and properties. Fields take no defaults.
"""
from __future__ import annotations

import collections

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple as NamedTuple
else:
    class _Maker(type):
        def __new__(mcls, name, bases, namespace):
            if not bases:                     # NamedTuple itself
                return super().__new__(mcls, name, bases, namespace)
            fields = list(namespace.get("__annotations__", {}))
            body = {k: v for k, v in namespace.items() if k not in ("__annotations__", "__dict__", "__weakref__")}
            return type(name, (collections.namedtuple(name, fields),), {**body, "__slots__": ()})

    class NamedTuple(metaclass=_Maker):
        pass
