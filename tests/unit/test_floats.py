"""Unit tests of float handling: validate's floats_match and the export format's NaN/inf encoding."""

from __future__ import annotations

import json
import math
import sys

import pytest

from mlflow_sync.errors import UsageError
from mlflow_sync.export_format import decode_float, encode_float, read_json, write_json
from mlflow_sync.validate.engine import floats_match
from mlflow_sync.validate.options import ValidateOptions

NAN, INF = float("nan"), float("inf")
TINY = 5e-324  # smallest subnormal
HUGE = sys.float_info.max


@pytest.mark.parametrize("a, b, tolerance, expected", [
    # NaN equals NaN and nothing else, whatever the tolerance
    (NAN, NAN, 0.0, True),
    (NAN, -NAN, 0.0, True),
    (NAN, 1.0, 0.0, False),
    (NAN, 1.0, 1e9, False),
    (NAN, INF, 1e9, False),
    (0.0, NAN, 1.0, False),
    # an infinity equals the same infinity only
    (INF, INF, 0.0, True),
    (-INF, -INF, 0.0, True),
    (INF, -INF, 0.0, False),
    (INF, -INF, 1e9, False),
    (INF, HUGE, 1.0, False),
    (-INF, -HUGE, 1e9, False),
    # tolerance 0 is exact
    (1.0, 1.0, 0.0, True),
    (0.1 + 0.2, 0.3, 0.0, False),
    (1.0, math.nextafter(1.0, 2.0), 0.0, False),
    (0.0, -0.0, 0.0, True),
    (0.0, 0.0, 0.0, True),
    (TINY, 0.0, 0.0, False),
    (3, 3.0, 0.0, True),
    # relative tolerance: |a - b| <= tolerance * max(|a|, |b|)
    (0.1 + 0.2, 0.3, 1e-15, True),
    (100.0, 101.0, 0.01, True),     # 1 <= 1.01
    (100.0, 102.0, 0.01, False),    # 2 > 1.02
    (4.0, 5.0, 0.2, True),          # exactly on the bound: 1 <= 0.2 * 5
    (4.0, 5.0, 0.19, False),
    (-100.0, -101.0, 0.01, True),   # magnitudes, not signed values
    (1.0, -1.0, 1.0, False),        # 2 > 1
    (5.0, 0.0, 1.0, True),          # 5 <= 1 * 5
    (1e-300, 1.0001e-300, 1e-3, True),
    (1e300, 1.0001e300, 1e-3, True),
    (1e300, 1.01e300, 1e-3, False),
    # purely relative: no absolute floor near zero
    (0.0, 1e-300, 0.5, False),
    (0.0, 1e-10, 0.99, False),
    (HUGE, -HUGE, 1.0, False),      # the difference overflows to inf
])
def test_floats_match(a, b, tolerance, expected):
    assert floats_match(a, b, tolerance) is expected
    assert floats_match(b, a, tolerance) is expected  # symmetric


@pytest.mark.parametrize("a, b, expected", [
    (None, None, True),
    (None, 0.0, False),
    (0.0, None, False),
    (None, NAN, False),
])
def test_floats_match_missing_values(a, b, expected):
    assert floats_match(a, b, 0.5) is expected


@pytest.mark.parametrize("encoded, value", [("NaN", NAN), ("Infinity", INF), ("-Infinity", -INF), ("1.5", 1.5)])
def test_floats_match_accepts_encoded_values(encoded, value):
    assert floats_match(encoded, value, 0.0)
    assert floats_match(value, encoded, 0.0)


def test_floats_match_tolerance_only_widens():
    pairs = [(1.0, 1.001), (10.0, 9.0), (1e-9, 2e-9), (-3.0, -3.3)]
    for a, b in pairs:
        results = [floats_match(a, b, t) for t in (0.0, 1e-4, 1e-3, 0.01, 0.1, 0.5, 1.0)]
        assert results == sorted(results), f"{a} vs {b}: a larger tolerance rejected what a smaller one accepted"


def test_float_tolerance_option_is_relative_and_non_negative():
    assert ValidateOptions().float_tolerance == 0.0
    assert ValidateOptions(float_tolerance=0.01).float_tolerance == 0.01
    with pytest.raises(UsageError, match="float-tolerance"):
        ValidateOptions(float_tolerance=-0.1)


# --- encode_float / decode_float ----------------------------------------------------------------


def test_encode_non_finite_values_as_strings():
    assert encode_float(NAN) == "NaN"
    assert encode_float(INF) == "Infinity"
    assert encode_float(-INF) == "-Infinity"


@pytest.mark.parametrize("value", [0.0, 1.0, -2.5, 0.1, 1e-300, TINY, -TINY, HUGE, -HUGE, 123456789.123456789])
def test_encode_keeps_finite_values(value):
    encoded = encode_float(value)
    assert isinstance(encoded, float) and encoded == value


def test_encode_keeps_the_sign_of_zero():
    assert math.copysign(1.0, encode_float(-0.0)) == -1.0


@pytest.mark.parametrize("value", [NAN, INF, -INF, 0.0, -0.0, 0.1, 1 / 3, -1e-310, TINY, HUGE, -HUGE, 2.0 ** 53 + 2])
def test_round_trip_through_strict_json(value):
    text = json.dumps({"value": encode_float(value)}, allow_nan=False)
    decoded = decode_float(json.loads(text)["value"])
    assert isinstance(decoded, float)
    if math.isnan(value):
        assert math.isnan(decoded)
    else:
        assert decoded == value
        assert math.copysign(1.0, decoded) == math.copysign(1.0, value)
    assert floats_match(decoded, value, 0.0)


def test_round_trip_through_an_export_file(tmp_path):
    values = [NAN, INF, -INF, 1.5, -0.0, TINY]
    path = tmp_path / "metrics.json"
    with pytest.raises(ValueError):  # the writer is strict: raw NaN is not JSON
        write_json(tmp_path / "raw.json", values)
    write_json(path, [encode_float(v) for v in values])
    assert "NaN" in path.read_text() and "Infinity" in path.read_text()
    decoded = [decode_float(v) for v in read_json(path)]
    assert all(floats_match(a, b, 0.0) for a, b in zip(decoded, values))
    assert math.isnan(decoded[0]) and decoded[1] == INF and decoded[2] == -INF


@pytest.mark.parametrize("value", [1.5, -0.0, 7, 0])
def test_decode_passes_numbers_through(value):
    decoded = decode_float(value)
    assert decoded == value and type(decoded) is type(value)
