"""Read pickles without letting them run code.

A pickle can name any importable callable and call it while loading (``os.system``, ``eval``,
``open``...). Data sets only need containers, scalars and NumPy arrays, so ``find_class`` here allows
exactly those and refuses every other global before anything is called.

Python 2 pickles (DialogueRNN-era feature files) are read with ``encoding="latin1"``: that is the
encoding NumPy documents for the raw bytes of Python 2 arrays, and it never fails on Python 2 ``str``.

Cost is bounded too: an allowed callable that allocates (``bytes(n)``, ``bytearray(n)``, ``ndarray(shape)``,
NumPy's ``_reconstruct``) may not ask for more elements than the file has bytes (plus a small margin).
Real data never does, since an array's contents are in the file; a few hundred bytes demanding gigabytes
is refused before anything is allocated. Once loaded, the structure is measured as the loaders will walk
it: a reference to an object already loaded costs the pickle two bytes but expands into a full copy when a
loader builds one utterance per entry (one list referenced 10,000 times is 10,000 lists of utterances).
:func:`check_expansion` counts elements that way, each reference in full, and refuses a structure that
expands past a multiple of the file's size: real data holds every element in the file.
"""

from __future__ import annotations

import _compat_pickle
import importlib
import os
import pickle
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from .types import DataError

_BUILTINS = (
    "dict",
    "list",
    "tuple",
    "set",
    "frozenset",
    "str",
    "bytes",
    "int",
    "float",
    "complex",
    "bool",
    "slice",
    "range",
    "bytearray",
)

ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {("builtins", name) for name in _BUILTINS}
    | {
        ("collections", "OrderedDict"),
        ("collections", "defaultdict"),
        # Python 3 pickles of bytes at protocol < 3 are written as _codecs.encode(text, "latin1").
        ("_codecs", "encode"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }
    | {
        (f"numpy.{core}.{module}", name)
        for core in ("core", "_core")
        for module, name in (
            ("multiarray", "_reconstruct"),
            ("multiarray", "scalar"),
            # NumPy 2 writes contiguous arrays at protocol 5 through _frombuffer.
            ("numeric", "_frombuffer"),
        )
    }
)


def _is_numpy_dtype_class(module: str, name: str) -> bool:
    """``numpy.dtypes.Float32DType`` and friends: NumPy 2 pickles dtype classes by name."""
    if module != "numpy.dtypes":
        return False
    candidate = getattr(np.dtypes, name, None)
    return isinstance(candidate, type) and issubclass(candidate, np.dtype)


def _python3_name(module: str, name: str) -> tuple[str, str]:
    """Python 2 spellings (``__builtin__.set``, ``copy_reg``) mapped the way ``fix_imports`` does."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


ALLOCATING = frozenset({"bytes", "bytearray", "ndarray", "_reconstruct", "range"})
SIZE_MARGIN = 1 << 20  # elements any call may ask for beyond the file's size


def _requested_elements(value: object) -> int:
    """The elements an argument asks for: an int itself, a shape tuple its product."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, tuple) and value and all(isinstance(v, int) for v in value):
        return int(np.prod([max(v, 0) for v in value], dtype=object))
    return 0


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose ``find_class`` only hands out containers, scalars and NumPy arrays."""

    def __init__(self, file, source: str, budget: int) -> None:
        super().__init__(file, encoding="latin1")
        self.source, self.budget = source, budget

    def _bounded(self, name: str, function: Callable) -> Callable:
        def call(*args: object, **kwargs: object) -> object:
            requested = max((_requested_elements(v) for v in (*args, *kwargs.values())), default=0)
            if requested > self.budget:
                raise DataError(
                    f"pickle asks {name} for {requested} elements, more than the file could hold "
                    f"({self.budget}): refused",
                    file=self.source,
                )
            # The bounded ndarray stands for the class where _reconstruct is handed it.
            return function(*(getattr(v, "array_type", v) for v in args), **kwargs)

        if name == "ndarray":
            call.array_type = function  # type: ignore[attr-defined]
        return call

    def find_class(self, module: str, name: str) -> object:
        module, name = _python3_name(module, name)
        if (module, name) not in ALLOWED_GLOBALS and not _is_numpy_dtype_class(module, name):
            raise DataError(
                f"pickle refers to the global '{module}.{name}', which is not allowed "
                "(only containers, scalars and NumPy arrays may be unpickled)",
                file=self.source,
            )
        # numpy.core is a deprecated alias of numpy._core in NumPy 2: resolve without the warning.
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = "numpy._core." + module.removeprefix("numpy.core.")
        found = getattr(importlib.import_module(module), name)
        return self._bounded(name, found) if name in ALLOCATING else found


# Elements a loaded structure may expand to per byte of its file. Each element of real data costs a byte
# or more in the pickle (an array element its itemsize, a character at least one byte, a container entry
# an opcode), so real data stays below 1; shared references are what exceed it.
EXPANSION_PER_BYTE = 2


def check_expansion(content: object, budget: int, source: str) -> int:
    """The elements ``content`` expands to, counting every reference in full (a list twice referenced
    counts twice); a :class:`DataError` as soon as the count passes ``budget``, so the walk itself costs
    at most ``budget`` steps, cycles included."""
    total, stack = 0, [content]
    while stack:
        item = stack.pop()
        children: Iterable[object] = ()
        if isinstance(item, np.ndarray):
            total += max(int(item.size), 1)
            if item.dtype.hasobject:
                children = item.ravel()
        elif isinstance(item, (str, bytes, bytearray, range)):
            total += max(len(item), 1)
        elif isinstance(item, dict):
            total += max(len(item), 1)
            children = (*item.keys(), *item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            total += max(len(item), 1)
            children = item
        else:
            total += 1
        if total > budget:  # before walking the children: the walk stays within the budget
            raise DataError(
                f"the pickle's shared references expand to more than {budget} elements, far more than "
                "its size can hold: refused (real data stores each element in the file)",
                file=source,
            )
        stack.extend(children)
    return total


def safe_load(path: str | Path) -> object:
    """Unpickle ``path`` with :class:`RestrictedUnpickler` and :func:`check_expansion`; any failure is a
    :class:`DataError`."""
    source = str(path)
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            content = RestrictedUnpickler(handle, source, size + SIZE_MARGIN).load()
        check_expansion(content, EXPANSION_PER_BYTE * size + SIZE_MARGIN, source)
        return content
    except DataError:
        raise
    except FileNotFoundError as error:
        raise DataError("no such file", file=source) from error
    except Exception as error:  # truncated or corrupt pickles raise many different types
        raise DataError(f"cannot unpickle: {type(error).__name__}: {error}", file=source) from error
