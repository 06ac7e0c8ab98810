"""The restricted unpickler: containers and NumPy arrays load; anything that could run code is refused."""

from __future__ import annotations

import builtins
import collections
import os
import pickle

import numpy as np
import pytest

from data_factories import write_pickle, write_python2_pickle
from infofusion.data import DataError, safe_load


class _Payload:
    """Unpickling calls ``function(*arguments)``: the classic code-execution gadget."""

    def __init__(self, function, *arguments) -> None:
        self.function, self.arguments = function, arguments

    def __reduce__(self):
        return self.function, self.arguments


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_containers_scalars_and_arrays_round_trip(tmp_path, protocol):
    content = {
        "array": np.arange(12, dtype=np.float32).reshape(3, 4),
        "fortran": np.asfortranarray(np.ones((2, 3))),
        "strings": np.array(["a", "bc"]),
        "objects": np.array(["x$_$1", "y$_$2"], dtype=object),
        "scalar": np.float32(1.5),
        "integer": np.int64(7),
        "dtype": np.dtype("f4"),
        "dtype_class": type(np.dtype("f4")),
        "ordered": collections.OrderedDict(a=1),
        "default": collections.defaultdict(list, {"k": [1]}),
        "misc": (
            1,
            2.5,
            3j,
            True,
            None,
            b"raw",
            bytearray(b"ba"),
            {1, 2},
            frozenset({3}),
            range(3),
            slice(1, 2),
        ),
    }
    loaded = safe_load(write_pickle(tmp_path / "ok.pkl", content, protocol=protocol))
    np.testing.assert_array_equal(loaded["array"], content["array"])
    np.testing.assert_array_equal(loaded["fortran"], content["fortran"])
    assert list(loaded["strings"]) == ["a", "bc"] and list(loaded["objects"]) == ["x$_$1", "y$_$2"]
    assert loaded["scalar"] == np.float32(1.5) and loaded["integer"] == 7 and loaded["dtype"] == np.float32
    assert loaded["ordered"] == content["ordered"] and loaded["default"]["k"] == [1]
    assert loaded["misc"] == content["misc"]


def test_python2_pickle_reads_str_as_latin1(tmp_path):
    # What Python 2 writes for ['A', 'caf\xe9', set([1])] at protocol 0 (py2 str is bytes: S'...').
    path = tmp_path / "py2.pkl"
    path.write_bytes(b"(lp0\nS'A'\np1\naS'caf\\xe9'\np2\nac__builtin__\nset\np3\n((lp4\nI1\natp5\nRp6\na.")
    assert safe_load(path) == ["A", "café", {1}]


def test_python2_numpy_pickle_loads(tmp_path):
    content = {"features": np.arange(6, dtype=np.float32).reshape(2, 3), "labels": [0, 1], "ids": ("a", "b")}
    loaded = safe_load(write_python2_pickle(tmp_path / "py2_numpy.pkl", content))
    np.testing.assert_array_equal(loaded["features"], content["features"])
    assert loaded["labels"] == [0, 1] and loaded["ids"] == ("a", "b")


@pytest.mark.parametrize(
    "function, arguments, refused",
    [
        (os.system, ("touch {marker}",), "system"),
        (builtins.eval, ("open({marker!r}, 'w')",), "builtins.eval"),
        (builtins.exec, ("open({marker!r}, 'w')",), "builtins.exec"),
        (builtins.open, ("{marker}", "w"), "io.open"),
        (builtins.getattr, (_Payload(builtins.__import__, "os"), "system"), "builtins.getattr"),
        (builtins.__import__, ("os",), "builtins.__import__"),
    ],
)
def test_code_running_payloads_are_refused_before_they_run(tmp_path, function, arguments, refused):
    marker = tmp_path / "pwned"
    arguments = tuple(a.format(marker=str(marker)) if isinstance(a, str) else a for a in arguments)
    path = write_pickle(tmp_path / "evil.pkl", {"data": [1, 2], "x": _Payload(function, *arguments)})
    with pytest.raises(DataError) as caught:
        safe_load(path)
    assert not marker.exists()
    assert refused in str(caught.value) and str(path) in str(caught.value) and caught.value.file == str(path)


def test_payload_hidden_inside_a_numpy_object_array_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    array = np.array([_Payload(builtins.open, str(marker), "w")], dtype=object)
    with pytest.raises(DataError, match="io.open"):
        safe_load(write_pickle(tmp_path / "evil.pkl", {"train": {"id": array}}))
    assert not marker.exists()


def test_arbitrary_classes_are_refused(tmp_path):
    with pytest.raises(DataError, match="collections.Counter"):
        safe_load(write_pickle(tmp_path / "c.pkl", collections.Counter("aab")))


def test_corrupt_and_missing_files_are_data_errors(tmp_path):
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(pickle.dumps({"a": np.ones(5)})[:-10])
    with pytest.raises(DataError, match="cannot unpickle") as caught:
        safe_load(truncated)
    assert caught.value.file == str(truncated)
    with pytest.raises(DataError, match="no such file"):
        safe_load(tmp_path / "absent.pkl")
