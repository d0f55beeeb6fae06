"""Hostile ``kubernetes.dcos.io/dklb-config`` annotations: the security review's S4, S5, S8 and S9 inputs.

Where it sits: test data shared by ``tests/unit/test_hostile_annotations.py`` (the parser, the
webhook, ``dklb plan``) and ``tests/engine/test_bad_input.py`` (the controller). Each case is an
annotation text and a needle its one error must contain: the field it names, or the problem.
"""

from __future__ import annotations

from dataclasses import dataclass

ANNOTATION_CAP = "bytes long: at most 16,384 are read"
TOO_DEEP = "the value is nested more than 32 levels deep"
OUT_OF_RANGE = "is out of range: integers are at most 2^53"


@dataclass(frozen=True)
class Hostile:
    id: str
    text: str
    needle: str  # in the (first) error: the field it names and the problem


def merge_bomb(levels: int) -> str:
    """``x0: &x0 {k: 1}``, ``xN: &xN {<<: [*x(N-1) x 9]}``, ``strategies: *xL``: without PyYAML's
    merge-key de-duplication (6.0.4), each level multiplies the work by 9 (S9)."""
    lines = ["x0: &x0 {k: 1}"]
    for n in range(1, levels + 1):
        lines.append(f"x{n}: &x{n} {{<<: [{', '.join([f'*x{n - 1}'] * 9)}]}}")
    lines.append(f"strategies: *x{levels}")
    return "\n".join(lines) + "\n"


def _ints(size: int, tail: str = "") -> str:
    """``frontends: [1,1,...]`` of about ``size`` bytes: every item is an error (S4)."""
    return "frontends: [" + ",".join(["1"] * ((size - 20) // 2)) + "]\n" + tail


LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefg", "bcdefgh", strict=True)
)
HEX = "0x" + "f" * 4000

#: The review's S5 table, row by row, then its hex cases.
S5 = [
    Hostile("frontends nested 360 deep", "frontends: " + "[" * 360 + "]" * 360, TOO_DEEP),
    Hostile(
        "block list nested 700 deep (246 KB)",
        "frontends:\n" + "".join(" " * i + "-\n" for i in range(700)),
        ANNOTATION_CAP,
    ),
    Hostile(
        "block list nested 150 deep (11 KB)",
        "frontends:\n" + "".join(" " * i + "-\n" for i in range(150)),
        TOO_DEEP,
    ),
    Hostile("5,000-digit integer", "size: " + "1" * 5000, f"size: an integer of 5,000 digits {OUT_OF_RANGE}"),
    Hostile("!!set as a key", "? !!set {a, b}\n: 1", "found unhashable key (line 1, column 3)"),
    Hostile(
        "cloud JSON 1,000 deep",
        "cloudProviderConfiguration: '" + "[" * 1000 + "]" * 1000 + "'",
        "cloudProviderConfiguration: the cloud-provider configuration is not valid JSON: "
        "it is nested too deeply",
    ),
    Hostile(
        "cloud JSON 4,301-digit int",
        'cloudProviderConfiguration: \'{"a": ' + "9" * 4301 + "}'",
        "cloudProviderConfiguration: the cloud-provider configuration is not valid JSON: "
        "an integer of 4,301 digits is out of range",
    ),
    Hostile("size: 0x + 4,000 f's", f"size: {HEX}", f"size: an integer of 4,000 digits {OUT_OF_RANGE}"),
    Hostile("cpus: 0x + 4,000 f's", f"cpus: {HEX}", f"cpus: an integer of 4,000 digits {OUT_OF_RANGE}"),
    Hostile("memory: 0x + 4,000 f's", f"memory: {HEX}", f"memory: an integer of 4,000 digits {OUT_OF_RANGE}"),
    Hostile(
        "a port: 0x + 4,000 f's",
        f"frontends: [{{port: {HEX}, servicePort: 80}}]",
        "frontends[0].port: an integer of 4,000 digits is not a valid port number",
    ),
]

#: S4 (cost), S8 (values the parser must refuse: control characters, huge integers, a write-back
#: over the cap), S9 (merge bomb) and a few more of the same kind.
S4_S8_S9 = [
    Hostile("256 KiB of ints, a syntax error at the end", _ints(256 * 1024 - 300, "\t@\n"), ANNOTATION_CAP),
    Hostile(
        "16 KB of ints: 8,132 items",
        _ints(16 * 1024 - 100),
        "the value holds more than 2,000 keys and values",
    ),
    Hostile("3 KB of ints: 1,500 errors", _ints(3020), "and 1,480 more"),
    Hostile(
        "2 KiB, 1,000 deep",
        "frontends: " + "[" * 1000 + "]" * 1000,
        "while increasing flow level: exceeded maximum nesting depth",
    ),
    Hostile("8-level merge bomb", merge_bomb(8), 'strategies: unknown field "k"'),
    Hostile("billion laughs", LAUGHS + "name: *h\n", "name: [[[[[[[[x, x, x, x, x, x, x, x, x], [x, x"),
    Hostile("a list that holds itself", "name: &a [*a]\n", "name: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["),
    Hostile(
        "role with an escape sequence",
        'role: "tenant-b-reserved\\u001b[2J\\r\\n"',
        'role: "tenant-b-reserved\\u001b[2J\\r\\n" holds the control character U+001B (at character 18)',
    ),
    Hostile("network with a bell", 'network: "ops\\a"', "network: "),
    Hostile("constraints with a newline", 'constraints: "hostname:CLUSTER:10.0.0.5\\nx"', "constraints: "),
    Hostile("constraints with a right-to-left override", 'constraints: "a\\u202eb"', "U+202E"),
    Hostile("contraints with a NUL", 'contraints: "a\\0b"', "contraints: "),
    Hostile("size 2^63", "size: 9223372036854775808", f"size: 9223372036854775808 {OUT_OF_RANGE}"),
    Hostile("memory 10^12 + 2^53", f"memory: {2**53 + 1}", f"memory: 9007199254740993 {OUT_OF_RANGE}"),
    Hostile(
        "constraints of 4,000 emoji: the write-back is 40 KB",
        'constraints: "' + "\U0001f600" * 4000 + '"',
        "(non-ASCII characters escaped), would be 40,",
    ),
    Hostile("a lone surrogate", "name: a\ud800", "found character U+D800, which YAML does not allow (line 1"),
    Hostile("a NUL byte", "name: a\x00", "found character U+0000, which YAML does not allow"),
    Hostile("a year 99999", "name: !!timestamp 99999-01-01", "cannot read a value"),
    Hostile(
        "a month 13",
        "name: !!timestamp 2001-13-01",
        "cannot read a value: ValueError: month must be in 1..12",
    ),
    Hostile(
        "a python tag", "name: !!python/object/apply:os.system ['true']", "could not determine a constructor"
    ),
    Hostile(
        "a sexagesimal integer of 16,001 digits", "size: 1" + ":1" * 8000, f"16,001 digits {OUT_OF_RANGE}"
    ),
    Hostile("a 16 KB key", "a" * 16000 + ": 1", "mapping values are not allowed in this context (line 1"),
]

ALL = S5 + S4_S8_S9


# The review's S8 annotation, verbatim.
S8_ANNOTATION = """\
size: 1000000000000
cpus: 100000.0
memory: 999999999999
role: "tenant-b-reserved\\u001b[2J\\r\\n"
network: "ops-admin-overlay"
constraints: "hostname:CLUSTER:10.0.0.5\\nx"
"""
