"""Durations as people type them: ``parse_duration`` reads them, ``format_duration`` prints them.

Proves the accepted forms (units ms/s/m/h/d, combinations, decimals, bare numbers as seconds),
that every refused input raises ValueError naming the bad value, the short human form printed
for each magnitude, and that the printed form of a whole number of seconds under an hour reads
back as the same number.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.model.durations import format_duration, parse_duration

PARSED: list[tuple[str | int | float, float]] = [
    ("30s", 30.0),
    ("2m", 120.0),
    ("1h", 3600.0),
    ("1d", 86400.0),
    ("1h30m", 5400.0),
    ("1m30s500ms", 90.5),
    ("500ms", 0.5),
    ("1.5s", 1.5),
    ("0.25m", 15.0),
    ("0s", 0.0),
    (" 45s ", 45.0),
    ("90", 90.0),
    ("2.5", 2.5),
    (0, 0.0),
    (7, 7.0),
    (1.5, 1.5),
]


@pytest.mark.parametrize(("text", "seconds"), PARSED, ids=[repr(t) for t, _ in PARSED])
def test_parse_duration_reads_seconds(text: str | int | float, seconds: float) -> None:
    result = parse_duration(text)
    assert result == pytest.approx(seconds)
    assert isinstance(result, float)


BAD: list[tuple[str | int | float | bool, str]] = [
    ("", "is not a valid duration"),
    ("   ", "is not a valid duration"),
    ("abc", "is not a valid duration"),
    ("30x", "is not a valid duration"),
    ("-5s", "is not a valid duration"),
    ("1h 30m", "is not a valid duration"),
    ("30s30", "is not a valid duration"),
    ("s", "is not a valid duration"),
    ("1.s", "is not a valid duration"),
    ("1e3", "is not a valid duration"),
    (-1, "negative"),
    (-0.5, "negative"),
    (True, "is not a duration"),
]


@pytest.mark.parametrize(("text", "complaint"), BAD, ids=[repr(t) for t, _ in BAD])
def test_parse_duration_refuses_bad_input_naming_the_value(
    text: str | int | float | bool, complaint: str
) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(text)
    message = str(caught.value)
    assert repr(text) in message, f"the message names the value: {message}"
    assert complaint in message


def test_a_bad_string_duration_message_shows_examples() -> None:
    with pytest.raises(ValueError, match=r"expected e\.g\. 30s, 2m, 1h30m"):
        parse_duration("soon")


FORMATTED: list[tuple[float, str]] = [
    (0, "0ms"),
    (-5, "0ms"),
    (0.0015, "1ms"),
    (0.5, "500ms"),
    (0.999, "999ms"),
    (1, "1s"),
    (45, "45s"),
    (59.9, "59s"),
    (60, "1m"),
    (192, "3m12s"),
    (3599, "59m59s"),
    (3600, "1h"),
    (3601, "1h"),
    (7500, "2h5m"),
    (86400, "1d"),
    (86400 * 3 + 3600 * 4, "3d4h"),
    (86400 * 2 + 59, "2d"),
]


@pytest.mark.parametrize(("seconds", "text"), FORMATTED, ids=[f"{s}s" for s, _ in FORMATTED])
def test_format_duration_prints_the_short_human_form(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.integers(min_value=0, max_value=3599))
def test_whole_seconds_under_an_hour_round_trip(seconds: int) -> None:
    text = format_duration(seconds)
    assert parse_duration(text) == (seconds if seconds else 0.0)


@given(st.integers(min_value=1, max_value=999))
def test_milliseconds_round_trip(millis: int) -> None:
    assert format_duration(millis / 1000) == f"{millis}ms"
    assert parse_duration(f"{millis}ms") == pytest.approx(millis / 1000)
