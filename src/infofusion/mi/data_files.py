"""Read the two variables of ``mi estimate`` from .npz, .npy, .csv or .parquet files.

How ``--x`` and ``--y`` name the data depends on the format:

* ``.npz``: the key of an array (``numpy.savez``); rows are samples, a 1-D array is one column.
* ``.npy``: column indices of the one 2-D array: ``0``, ``0,2,5``, ``0:3`` (0, 1, 2), ``3:`` (3 to the end).
* ``.csv`` (first line: column names) and ``.parquet``: column names, comma-separated: ``age,income``.

Every failure raises :class:`InputError` with one line naming the file and the key or column.
Nothing is unpickled (``allow_pickle=False``). Reads are bounded: an array's header must declare exactly
the bytes its file (or its archive member, decompressed) holds, and no array may exceed
:data:`MAX_ARRAY_BYTES`; both are checked from the header, before anything is allocated or decompressed.
An .npz member is found by its key as NumPy finds it (``x`` or ``x.npy``) and read here, so every member
that can be read passes the same check. Values are finite and at most :data:`MAX_ABS_VALUE` in magnitude
(standardising squares them); CSV cells over ``csv.field_size_limit()`` and files that are not UTF-8
(read as Windows-1252 instead, as the dialogue CSVs are) are one line, not a traceback.
"""

from __future__ import annotations

import csv
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .fitting import as_matrix

FORMATS = (".npz", ".npy", ".csv", ".parquet")
MIN_ROWS = 4
MAX_ARRAY_BYTES = 4 * 1024**3  # far beyond what an MI estimate can use, far below a decompression bomb
# Beyond this, standardising (a variance: squares summed over rows) overflows float64 to inf and the
# estimate to NaN; MI does not change when a column is rescaled, so the user can divide first.
MAX_ABS_VALUE = 1e150


class InputError(Exception):
    """Bad input: the message names the file and key; reported on one line, exit code 2."""


def _matrix(values: np.ndarray, file: str, what: str) -> np.ndarray:
    try:
        matrix = as_matrix(values, name=f"{file}: {what}")
    except ValueError as error:  # wrong shape, dtype, NaN/inf, or an object array needing pickle
        raise InputError(str(error)) from None
    largest = float(np.abs(matrix).max()) if matrix.size else 0.0
    if largest > MAX_ABS_VALUE:
        raise InputError(
            f"{file}: {what} holds values up to {largest:.3g}, beyond ±{MAX_ABS_VALUE:.0e}, where the "
            "estimators' arithmetic overflows: divide by a constant first (MI does not change)"
        )
    return matrix


def _named_list(names: list[str]) -> str:
    return ", ".join(f"'{name}'" for name in names)


def _names(spec: str) -> list[str]:
    return [name.strip() for name in spec.split(",") if name.strip()]


def check_declared_size(handle, stored_bytes: int, what: str) -> None:
    """The .npy header at ``handle`` must declare ``stored_bytes`` of data, at most MAX_ARRAY_BYTES."""
    try:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
    except ValueError as error:
        raise InputError(f"{what}: not a readable .npy array ({error})") from None
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if declared > MAX_ARRAY_BYTES:
        raise InputError(f"{what}: declares {declared} bytes of data, over the limit of {MAX_ARRAY_BYTES}")
    if not dtype.hasobject and declared != stored_bytes - handle.tell():
        raise InputError(f"{what}: declares shape {shape} but holds {stored_bytes - handle.tell()} bytes")


def _npz_member(archive: zipfile.ZipFile, key: str) -> str | None:
    """The member NumPy's ``NpzFile`` reads for ``key``: the exact name first, then ``key.npy``."""
    names = set(archive.namelist())
    return next((name for name in (key, f"{key}.npy") if name in names), None)


def _npz_keys(archive: zipfile.ZipFile) -> list[str]:
    return [name.removesuffix(".npy") for name in archive.namelist()]


def _load_npz(file: str, path: Path, keys: tuple[str, str]) -> list[np.ndarray]:
    """Each key's member, size-checked from its header and then read from the same archive: no member
    reaches NumPy unchecked (``NpzFile`` also reads a member named ``x``, without ``.npy``)."""
    try:
        with zipfile.ZipFile(path) as archive:
            matrices = []
            for key in keys:
                name = _npz_member(archive, key)
                if name is None:
                    available = ", ".join(_npz_keys(archive)) or "none"
                    raise InputError(f"{file}: no array named '{key}' (available: {available})")
                what = f"key '{key}'"
                stored = archive.getinfo(name).file_size  # decompressed size, from the directory
                with archive.open(name) as member:
                    check_declared_size(member, stored, f"{file}: {what}")
                with archive.open(name) as member:
                    try:
                        values = np.lib.format.read_array(member, allow_pickle=False)
                    except ValueError as error:  # an object array: would need pickle
                        raise InputError(f"{file}: {what}: {error}") from None
                matrices.append(_matrix(values, file, what))
    except (OSError, EOFError, RuntimeError, NotImplementedError, zlib.error, zipfile.BadZipFile) as error:
        if not zipfile.is_zipfile(path) and _is_npy(path):
            raise InputError(f"{file}: not an .npz archive (a single .npy array has no keys)") from None
        raise InputError(f"{file}: not a readable .npz file ({error})") from None
    return matrices


def _is_npy(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(len(np.lib.format.MAGIC_PREFIX)) == np.lib.format.MAGIC_PREFIX


def parse_columns(spec: str, width: int, file: str) -> list[int]:
    """``0``, ``0,2``, ``1:4``, ``3:`` → column indices of an array ``width`` columns wide."""
    indices: list[int] = []
    for part in _names(spec):
        try:
            if ":" in part:
                start, _, stop = part.partition(":")
                indices += range(int(start or 0), int(stop) if stop else width)
            else:
                indices.append(int(part))
        except ValueError:
            raise InputError(
                f"{file}: column '{part}' is not an index (.npy columns are numbers: 0,2 or 0:3)"
            ) from None
    if not indices:
        raise InputError(f"{file}: no columns in '{spec}'")
    for index in indices:
        if not 0 <= index < width:
            raise InputError(f"{file}: column {index} does not exist (the array has {width} columns)")
    return indices


def _load_npy(file: str, path: Path, specs: tuple[str, str]) -> list[np.ndarray]:
    try:
        with open(path, "rb") as handle:
            check_declared_size(handle, path.stat().st_size, file)
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise InputError(f"{file}: not a readable .npy file ({error})") from None
    if not isinstance(array, np.ndarray):
        raise InputError(f"{file}: not a single .npy array")
    matrix = _matrix(array, file, "array")
    return [matrix[:, parse_columns(spec, matrix.shape[1], file)] for spec in specs]


def _missing_columns(file: str, missing: list[str], available: list[str]) -> InputError:
    """Every missing column at once, with the ones the file has."""
    noun = "column named" if len(missing) == 1 else "columns named"
    listed = ", ".join(available) or "none"
    return InputError(f"{file}: no {noun} {_named_list(missing)} (available: {listed})")


def _select(table: dict[str, np.ndarray], spec: str, file: str) -> np.ndarray:
    names = _names(spec)
    missing = [name for name in names if name not in table]
    if missing:
        raise _missing_columns(file, missing, list(table))
    if not names:
        raise InputError(f"{file}: no columns in '{spec}'")
    return np.column_stack([table[name] for name in names])


def _csv_columns(file: str, path: Path, wanted: set[str]) -> dict[str, np.ndarray]:
    """The wanted columns as numbers; UTF-8 first, Windows-1252 when the file is not UTF-8."""
    try:
        return _csv_columns_as(file, path, wanted, "utf-8-sig")
    except UnicodeDecodeError:
        return _csv_columns_as(file, path, wanted, "cp1252")


def _csv_columns_as(file: str, path: Path, wanted: set[str], encoding: str) -> dict[str, np.ndarray]:
    errors = "strict" if encoding == "utf-8-sig" else "replace"
    with path.open(newline="", encoding=encoding, errors=errors) as handle:
        reader = csv.reader(handle)
        rows = _csv_rows(file, reader)
        header = next(rows, None)
        if header is None:
            raise InputError(f"{file}: empty file (the first line must name the columns)")
        header = [name.strip() for name in header]
        missing = sorted(wanted - set(header))
        if missing:
            raise _missing_columns(file, missing, header)
        positions = {name: header.index(name) for name in wanted}
        values: dict[str, list[float]] = {name: [] for name in wanted}
        for row in rows:
            if not row:
                continue
            for name, position in positions.items():
                cell = row[position].strip() if position < len(row) else ""
                try:
                    values[name].append(float(cell))
                except ValueError:
                    shown = cell if len(cell) <= 40 else f"{cell[:40]}..."
                    raise InputError(
                        f"{file}: column '{name}', line {reader.line_num}: '{shown}' is not a number"
                    ) from None
    return {name: np.asarray(column) for name, column in values.items()}


def _csv_rows(file: str, reader: Iterator[list[str]]) -> Iterator[list[str]]:
    """The reader's rows; its errors (a cell over ``csv.field_size_limit()``, a NUL byte) as one line."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            line = getattr(reader, "line_num", "?")
            raise InputError(f"{file}: line {line}: not a readable CSV row ({error})") from None
        yield row


def _parquet_columns(file: str, path: Path, wanted: set[str]) -> dict[str, np.ndarray]:
    try:
        import pyarrow.parquet as parquet
    except ImportError:
        raise InputError(f"{file}: reading .parquet needs pyarrow (pip install pyarrow)") from None
    try:
        schema = parquet.read_schema(path)
    except Exception as error:  # pyarrow raises its own ArrowInvalid / OSError types
        raise InputError(f"{file}: not a readable .parquet file ({error})") from None
    missing = sorted(wanted - set(schema.names))
    if missing:
        raise _missing_columns(file, missing, list(schema.names))
    table = parquet.read_table(path, columns=sorted(wanted))
    columns = {}
    for name in wanted:
        column = table.column(name)
        if column.null_count:
            raise InputError(f"{file}: column '{name}' has {column.null_count} missing values")
        columns[name] = _matrix(column.to_numpy(), file, f"column '{name}'")[:, 0]
    return columns


def load_pair(file: str, x_spec: str, y_spec: str) -> tuple[np.ndarray, np.ndarray]:
    """The two variables as float64 matrices (rows = samples); raises InputError naming file and key."""
    path = Path(file)
    if not path.is_file():
        raise InputError(f"{file}: no such file")
    suffix = path.suffix.lower()
    specs = (x_spec, y_spec)
    if suffix == ".npy":
        x, y = _load_npy(file, path, specs)
        labels = (f"columns '{x_spec}'", f"columns '{y_spec}'")
    elif suffix in (".csv", ".parquet"):
        wanted = set(_names(x_spec)) | set(_names(y_spec))
        reader = _csv_columns if suffix == ".csv" else _parquet_columns
        table = reader(file, path, wanted)
        x, y = (_matrix(_select(table, spec, file), file, f"columns '{spec}'") for spec in specs)
        labels = (f"columns '{x_spec}'", f"columns '{y_spec}'")
    else:  # .npz, and any other name: numpy decides whether it is an archive
        x, y = _load_npz(file, path, specs)
        labels = (f"key '{x_spec}'", f"key '{y_spec}'")
    if x.shape[0] != y.shape[0]:
        raise InputError(f"{file}: {labels[0]} has {x.shape[0]} rows but {labels[1]} has {y.shape[0]}")
    if x.shape[0] < MIN_ROWS:
        raise InputError(f"{file}: {labels[0]} and {labels[1]} have {x.shape[0]} rows; at least 4 are needed")
    return x, y
