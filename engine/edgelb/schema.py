"""The EdgeLB V2 pool schema: how EdgeLB reads, stores and returns a pool (pure).

Where it sits in the data flow: ``engine.model.translation`` builds the desired pool and compares it with
what ``GET /v2/pools/{name}`` returned through ``normalize_pool`` (a Ready binding must cause no PUT on
resync). The local EdgeLB (``edgelb_local.server``, refusals in ``edgelb_local.validation``) and the
test fake decode request bodies with ``decode_pool`` and store ``fill_defaults`` of what they accept,
so that they return pools the way the real EdgeLB does.

The real EdgeLB is a go-swagger server (read in mesosphere-backup/edgelb-kubernetes, vendored
``dcos-edge-lb/apiserver/models/v2_*.go``). Its JSON round trip is what ``MODEL`` describes:
- decoding starts every object from the model's defaults, then sets the fields the body names; keys
  match case-insensitively, as in Go's encoding/json; unknown keys are dropped; a JSON type error
  (``128.0`` for an int32, a string for a bool) fails the request;
- encoding applies ``omitempty``: a zero number, ``false``, ``""``, an empty map and an absent
  pointer are left out, so a GET (which decodes the stored JSON again) reads them back as their
  defaults. ``endpoint.port: 0`` reads back as -1, ``cpus: 0`` as 0.9. Pointer fields keep a zero
  (``count: 0``, ``frontend.bindPort: 0``, ``stats.bindPort: 0``). ``stats.bindPort`` is an int32 in
  the 2018 code, where a 0 read back as 9090; the models the Go dklb is built against (dcos-edge-lb
  1.3, where ``V2Stats.BindPort`` is ``*int32``) keep it: 0 means a dynamic stats port there, and that
  is what this table says.
Fields from later EdgeLB versions (``poolHealthcheck*`` 1.2.3, ``cloudProvider`` 1.3) are described
from their documentation. One simplification: JSON ``null`` leaves a field at its default, where Go
would set a pointer or list to nil (and its checks would then dereference it).

Everything here works on plain JSON values and never mutates its argument.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Pool = dict[str, Any]

POOL_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")

PROTOCOLS = ("HTTP", "HTTPS", "TCP", "TLS")
ENDPOINT_TYPES = ("AUTO_IP", "AGENT_IP", "CONTAINER_IP", "ADDRESS")
API_VERSIONS = ("V1", "V2")
ELB_TYPES = ("NLB",)

# The pool framework package EdgeLB installs a pool with. The server fills these in and hands them to
# Cosmos on every POST/PUT; a client that echoes what it read asks for that package version again,
# which fails once EdgeLB has been upgraded. They are not part of what a client asks for:
# comparisons ignore them and the client never sends them.
PACKAGE_NAME = "edgelb-pool"
PACKAGE_VERSION = "v1.5.1"
SERVER_ONLY_KEYS = ("packageName", "packageVersion")

# Float noise (a server storing cpus as float32 returns 0.10000000149011612) must not read as a change.
FLOAT_DIGITS = 6


@dataclass(frozen=True)
class Field:
    key: str
    kind: str  # "string", "int32", "float64", "bool", "map" (of strings) or a MODEL struct name
    pointer: bool = False  # a Go pointer: omitted only when absent, so a zero is kept
    many: bool = False  # a Go slice of ``kind``: never omitted (no omitempty in the models)


@dataclass(frozen=True)
class Struct:
    go_name: str
    fields: tuple[Field, ...]
    defaults: Mapping[str, Any] | None  # the JSON its generated UnmarshalJSON starts from

    def field(self, key: str) -> Field | None:
        # Go's encoding/json: the exact key first, else a case-insensitive match (the first field
        # in declaration order whose key folds to it).
        found = self._exact.get(key)
        return found if found is not None else self._folded.get(key.casefold())

    @functools.cached_property
    def _exact(self) -> dict[str, Field]:
        return {f.key: f for f in self.fields}

    @functools.cached_property
    def _folded(self) -> dict[str, Field]:
        folded: dict[str, Field] = {}
        for f in self.fields:
            folded.setdefault(f.key.casefold(), f)
        return folded


def _struct(go_name: str, spec: str, defaults: Mapping[str, Any] | None = None) -> Struct:
    """``spec``: ``key:type`` words; ``*type`` is a pointer, ``[]type`` a slice."""
    fields = []
    for word in spec.split():
        key, kind = word.split(":")
        many = kind.startswith("[]")
        kind = kind.removeprefix("[]")
        pointer = kind.startswith("*")
        fields.append(Field(key, kind.removeprefix("*"), pointer=pointer, many=many))
    return Struct(go_name, tuple(fields), defaults)


_REQUEST_DEFAULTS = {k: True for k in ("forwardfor", "rewritePath", "setHostHeader", "xForwardedPort")}
MODEL: dict[str, Struct] = {
    s.go_name: s
    for s in (
        _struct(
            "V2Pool",
            "apiVersion:string autoCertificate:bool cloudProvider:*CloudProvider constraints:*string"
            " count:*int32 cpus:float64 cpusAdminOverhead:float64 disk:int32 environmentVariables:map"
            " haproxy:*V2Haproxy mem:int32 memAdminOverhead:int32 name:string namespace:*string"
            " packageName:string packageVersion:string poolHealthcheckGracePeriod:*int32"
            " poolHealthcheckInterval:*int32 poolHealthcheckMaxFail:*int32 poolHealthcheckTimeout:*int32"
            " ports:[]int32 principal:*string role:string secretName:*string"
            " secrets:[]*V2PoolSecretsItems0 virtualNetworks:[]*V2PoolVirtualNetworksItems0",
            {
                "apiVersion": "V2",
                "constraints": "hostname:UNIQUE",
                "count": 1,
                "cpus": 0.9,
                "cpusAdminOverhead": 0.1,
                "disk": 256,
                "haproxy": {},
                "mem": 992,
                "memAdminOverhead": 32,
                "namespace": "dcos-edgelb/pools",
                "packageName": PACKAGE_NAME,
                "packageVersion": PACKAGE_VERSION,
                "poolHealthcheckGracePeriod": 180,
                "poolHealthcheckInterval": 12,
                "poolHealthcheckMaxFail": 5,
                "poolHealthcheckTimeout": 60,
                "ports": [],
                "role": "slave_public",
                "secrets": [],
                "virtualNetworks": [],
            },
        ),
        _struct("V2PoolSecretsItems0", "file:string secret:string"),
        _struct("V2PoolVirtualNetworksItems0", "labels:map name:string"),
        _struct(
            "V2Haproxy",
            "backends:[]*V2Backend frontends:[]*V2Frontend stats:*V2Stats",
            {"backends": [], "frontends": [], "stats": {}},
        ),
        _struct(
            "V2Stats", "bindAddress:string bindPort:*int32", {"bindAddress": "0.0.0.0", "bindPort": 9090}
        ),
        _struct(
            "V2Frontend",
            "bindAddress:string bindModifier:string bindPort:*int32 certificates:[]string"
            " linkBackend:*V2FrontendLinkBackend miscStrs:[]string name:string protocol:string"
            " redirectToHttps:*V2FrontendRedirectToHTTPS",
            {"bindAddress": "0.0.0.0", "bindPort": -1, "certificates": [], "linkBackend": {}, "miscStrs": []},
        ),
        _struct(
            "V2FrontendLinkBackend",
            "defaultBackend:string map:[]*V2FrontendLinkBackendMapItems0",
            {"map": []},
        ),
        _struct(
            "V2FrontendLinkBackendMapItems0",
            "backend:string hostEq:string hostReg:string pathBeg:string pathEnd:string pathReg:string",
        ),
        _struct(
            "V2FrontendRedirectToHTTPS", "except:[]*V2FrontendRedirectToHTTPSExceptItems0", {"except": []}
        ),
        _struct("V2FrontendRedirectToHTTPSExceptItems0", "host:string pathBeg:string"),
        _struct(
            "V2Backend",
            "balance:string customCheck:*V2BackendCustomCheck miscStrs:[]string name:string"
            " protocol:string rewriteHttp:*V2RewriteHTTP services:[]*V2Service",
            {"balance": "roundrobin", "miscStrs": [], "rewriteHttp": {}, "services": []},
        ),
        _struct("V2BackendCustomCheck", "httpchk:bool httpchkMiscStr:string miscStr:string sslHelloChk:bool"),
        _struct(
            "V2RewriteHTTP",
            "host:string path:*V2RewriteHTTPPath request:*V2RewriteHTTPRequest"
            " response:*V2RewriteHTTPResponse sticky:*V2RewriteHttpsticky",
            {"request": {}, "response": {}},
        ),
        _struct("V2RewriteHTTPPath", "fromPath:*string toPath:*string", {"fromPath": "", "toPath": ""}),
        _struct(
            "V2RewriteHTTPRequest",
            "forwardfor:*bool rewritePath:*bool setHostHeader:*bool xForwardedPort:*bool"
            " xForwardedProtoHttpsIfTls:*bool",
            {**_REQUEST_DEFAULTS, "xForwardedProtoHttpsIfTls": True},
        ),
        _struct("V2RewriteHTTPResponse", "rewriteLocation:*bool", {"rewriteLocation": True}),
        _struct("V2RewriteHttpsticky", "customStr:string enabled:*bool", {"enabled": True}),
        _struct(
            "V2Service",
            "endpoint:*V2Endpoint marathon:*V2ServiceMarathon mesos:*V2ServiceMesos",
            {"endpoint": {}, "marathon": {}, "mesos": {}},
        ),
        _struct(
            "V2ServiceMarathon",
            "containerName:string containerNamePattern:string serviceID:string serviceIDPattern:string",
        ),
        _struct(
            "V2ServiceMesos",
            "frameworkID:string frameworkIDPattern:string frameworkName:string frameworkNamePattern:string"
            " taskID:string taskIDPattern:string taskName:string taskNamePattern:string",
        ),
        _struct(
            "V2Endpoint",
            "address:string allPorts:bool check:*V2EndpointCheck miscStr:string port:int32"
            " portName:string type:string",
            {"check": {}, "port": -1, "type": "AUTO_IP"},
        ),
        _struct("V2EndpointCheck", "customStr:string enabled:*bool", {"enabled": True}),
        _struct("CloudProvider", "aws:*CloudProviderAws"),
        _struct("CloudProviderAws", "elbs:[]*CloudProviderAwsElb", {"elbs": []}),
        _struct(
            "CloudProviderAwsElb",
            "elasticIPs:[]string internal:bool listeners:[]*CloudProviderAwsElbListener name:string"
            " subnets:[]string tags:[]*CloudProviderAwsElbTag type:string",
            {"elasticIPs": [], "listeners": [], "subnets": [], "tags": [], "type": "NLB"},
        ),
        _struct("CloudProviderAwsElbListener", "linkFrontend:string port:int32 protocol:string"),
        _struct("CloudProviderAwsElbTag", "key:string value:string"),
    )
}

# The defaults EdgeLB fills into a pool it returns (``engine.cli.pools`` shows them).
POOL_DEFAULTS: dict[str, Any] = dict(MODEL["V2Pool"].defaults or {})

_INT32 = (-(2**31), 2**31 - 1)
_ZERO: dict[str, Any] = {"string": "", "int32": 0, "float64": 0.0, "bool": False}
_GO_TYPE = {"map": "map[string]string"}


def _json_kind(value: Any) -> str:
    # How Go's encoding/json names the JSON value it could not store.
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _go_type(f: Field, *, element: bool = False) -> str:
    name = _GO_TYPE.get(f.kind, f.kind)
    if f.kind in MODEL:
        name = f"*models.{name}" if f.many else f"models.{name}"
    return f"[]{name}" if f.many and not element else name


class _Decoder:
    """Go's decode of a JSON value into a model struct; remembers the first type error, like Go."""

    def __init__(self) -> None:
        self.error: str | None = None

    def fail(self, owner: Struct, key: str, what: str, go_type: str) -> None:
        if self.error is None:
            # A struct with defaults is decoded by its own UnmarshalJSON, into an alias type.
            where = owner.go_name + ("Alias" if owner.defaults is not None else "")
            self.error = f"json: cannot unmarshal {what} into Go struct field {where}.{key} of type {go_type}"

    def fail_value(self, what: str, go_type: str) -> None:
        if self.error is None:
            self.error = f"json: cannot unmarshal {what} into Go value of type {go_type}"

    def struct(self, value: Mapping[str, Any], name: str, overrides: Mapping[str, Any] | None = None) -> Pool:
        # The defaults are decoded once per model (constants that decode without error): most of
        # what a decode cost was filling them in. Only the shared values the body did not replace
        # are copied, so no result shares anything with another.
        struct = MODEL[name]
        defaults = _decoded_defaults(name)
        result = dict(defaults)
        for source in (overrides or {}, value):
            for key, item in source.items():
                f = struct.field(key)
                if f is None or item is None:
                    continue
                decoded = self.field(struct, f, item)
                if decoded is not _BAD:
                    result[f.key] = decoded
        for key, item in result.items():
            if item is defaults[key] and isinstance(item, dict | list):
                result[key] = _json_copy(item)
        return result

    def field(self, owner: Struct, f: Field, value: Any) -> Any:
        if not f.many:
            return self.single(owner, f, value)
        if not isinstance(value, list):
            self.fail(owner, f.key, _json_kind(value), _go_type(f))
            return _BAD
        items = [self.single(owner, f, item, element=True) for item in value if item is not None]
        return [item for item in items if item is not _BAD]

    def single(self, owner: Struct, f: Field, value: Any, *, element: bool = False) -> Any:
        if f.kind in MODEL:
            if isinstance(value, dict):
                return self.struct(value, f.kind)
            if MODEL[f.kind].defaults is not None:
                # Go hands the value to the struct's UnmarshalJSON, whose own decode fails.
                self.fail_value(_json_kind(value), f"models.{f.kind}Alias")
            else:
                self.fail(owner, f.key, _json_kind(value), _go_type(f, element=element))
            return _BAD
        if f.kind == "map":
            if not isinstance(value, dict):
                self.fail(owner, f.key, _json_kind(value), _go_type(f))
                return _BAD
            result = {}
            for k, v in value.items():
                if v is not None and not isinstance(v, str):
                    self.fail(owner, f"{f.key}.{k}", _json_kind(v), "string")
                    continue
                result[k] = v or ""
            return result
        return self.scalar(owner, f, value)

    def scalar(self, owner: Struct, f: Field, value: Any) -> Any:
        kind = f.kind
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if kind == "string" and isinstance(value, str):
            return value
        if kind == "bool" and isinstance(value, bool):
            return value
        if kind == "float64" and number:
            return float(value)
        if kind == "int32" and number:
            if isinstance(value, int) and _INT32[0] <= value <= _INT32[1]:
                return value
            self.fail(owner, f.key, f"number {value!r}", kind)
            return _BAD
        self.fail(owner, f.key, _json_kind(value), kind)
        return _BAD


_BAD = object()  # a value Go could not decode: the field keeps what it had


@functools.cache
def _decoded_defaults(name: str) -> Pool:
    """A ``name`` object decoded from ``{}``: every field at its zero, then the model's defaults.
    Shared: never returned without ``_json_copy``."""
    struct = MODEL[name]
    result: Pool = {
        f.key: None if f.pointer or f.many or f.kind not in _ZERO else _ZERO[f.kind] for f in struct.fields
    }
    decoder = _Decoder()
    for key, item in (struct.defaults or {}).items():
        f = struct.field(key)
        if f is None or item is None:
            continue
        decoded = decoder.field(struct, f, item)
        if decoded is not _BAD:
            result[f.key] = decoded
    assert decoder.error is None, f"the defaults of {name} do not decode: {decoder.error}"
    return result


def _json_copy(value: Any) -> Any:
    """A deep copy of a JSON value (dicts, lists, scalars), several times faster than ``copy.deepcopy``."""
    if isinstance(value, dict):
        return {k: _json_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_copy(v) for v in value]
    return value


def decode_pool(body: Any, *, package_version: str = PACKAGE_VERSION) -> tuple[Pool, str | None]:
    """The pool as EdgeLB's Go model holds it after reading ``body`` (every field present, defaults
    applied, unknown keys dropped), and Go's message for the first JSON type error (None if none).

    ``package_version`` is the pool package version of the server reading it (its default).
    """
    decoder = _Decoder()
    if isinstance(body, dict):
        pool = decoder.struct(body, "V2Pool", {"packageVersion": package_version})
    else:
        pool = decoder.struct({}, "V2Pool", {"packageVersion": package_version})
        if body is not None:  # Go reads null as an empty object
            decoder.fail_value(_json_kind(body), "models.V2PoolAlias")
    return pool, decoder.error


def _encode(value: Any, name: str) -> Pool:
    out: Pool = {}
    for f in MODEL[name].fields:
        item = value.get(f.key)
        if f.many:
            out[f.key] = None if item is None else [_encode_one(f, v) for v in item]
        elif not (item is None or (not f.pointer and item in ("", 0, False, {}))):
            out[f.key] = _encode_one(f, item)
    return out


def _encode_one(f: Field, value: Any) -> Any:
    if f.kind in MODEL:
        return _encode(value, f.kind)
    if f.kind == "float64" and float(value).is_integer() and abs(value) < 1e21:
        return int(value)  # Go writes 1, not 1.0
    return _json_copy(value)


def encode_pool(decoded: Pool) -> Pool:
    """``decoded`` (as ``decode_pool`` gives it) as Go encodes it: zeros of omitempty fields left out."""
    return _encode(decoded, "V2Pool")


def _returned(pool: Pool) -> Pool:
    return encode_pool(
        decode_pool(pool, package_version=str(pool.get("packageVersion") or PACKAGE_VERSION))[0]
    )


def fill_defaults(pool: Pool) -> Pool:
    """The pool as a GET returns it after a POST/PUT of ``pool``: what the POST answered (one decode and
    encode) read back from storage (a second one). Fields that cannot be decoded keep their default."""
    if not isinstance(pool, dict):
        return copy.deepcopy(pool)
    return _returned(_returned(pool))


def _by_name(items: Any) -> Any:
    if not isinstance(items, list):
        return items
    # The JSON text breaks ties so that two unnamed or same-named entries still sort deterministically.
    return sorted(
        items, key=lambda item: (str(item.get("name", "")) if isinstance(item, dict) else "", _key(item))
    )


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _clean(value: Any) -> Any:
    # JSON null and an absent key mean the same to EdgeLB; floats lose their representation noise.
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, float):
        return round(value, FLOAT_DIGITS)
    return value


def normalize_pool(pool: Pool) -> Pool:
    """The canonical form of a pool: what EdgeLB returns for it, named lists sorted, server-only keys
    removed, floats rounded.

    ``normalize_pool(what_we_sent) == normalize_pool(what_the_server_returned)`` for an unchanged pool.
    """
    if not isinstance(pool, dict):
        return _clean(pool)
    result = _clean(fill_defaults(_clean(pool)))
    for key in SERVER_ONLY_KEYS:
        result.pop(key, None)
    result["virtualNetworks"] = _by_name(result.get("virtualNetworks"))
    haproxy = result.get("haproxy")
    if isinstance(haproxy, dict):
        haproxy["frontends"] = _by_name(haproxy.get("frontends"))
        haproxy["backends"] = _by_name(haproxy.get("backends"))
    return result


def default_frontend_name(frontend: Mapping[str, Any]) -> str:
    """EdgeLB's name for a frontend without one (never stored: computed where a name is needed)."""
    return f"frontend_{frontend.get('bindAddress') or '0.0.0.0'}_{frontend.get('bindPort', -1)}"
