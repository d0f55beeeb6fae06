"""The ``dklb`` commands on a real PostgreSQL server (``localpg``): ``dklb migrate --from --to``
copying a controller's database to PostgreSQL and back, the credential flags (a password file, a
DSN file, ``--database-ca-file`` against a server with TLS), and the password in no output, no
error and no log line."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.config.config_exception import ConfigException
from sqlalchemy import insert, make_url, select

import localpg
from engine import cli
from engine.cli import database
from engine.store import copy, database_url, make_engine
from engine.store.copy import tables
from engine.store.schema import HISTORY
from tests.engine.harness import World
from tests.fakes.kube import make_service

CONFIG = "name: {pool}\nfrontends:\n- port: {port}\n  servicePort: {service_port}\n"


def service_config(pool: str, port: int, service_port: int) -> str:
    return CONFIG.format(pool=pool, port=port, service_port=service_port)


@pytest.fixture(scope="module")
def controller_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database a controller filled: Ready bindings, a shared pool, a retried one, history."""
    world = World(tmp_path_factory.mktemp("world"))
    world.kube.apply(make_service("redis", config=service_config("dklb-redis", 16379, 6379)))
    world.kube.apply(
        make_service("web1", namespace="shop", ports=[(80, 30080)], config=service_config("shared", 8080, 80))
    )
    world.kube.apply(
        make_service("web2", namespace="shop", ports=[(80, 30081)], config=service_config("shared", 8081, 80))
    )
    world.settle()
    world.kube.delete("shop/web2")
    world.settle()
    assert world.states() == {"default/redis": "Ready", "shop/web1": "Ready"}
    world.store.close()
    return Path(world.db)


def dump(url: str) -> dict[str, list[dict[str, Any]]]:
    """Every copied table's rows, in key order, as the store's column types read them."""
    engine = make_engine(database_url(url), read_only=True)
    try:
        with engine.connect() as conn:
            return {
                t.name: [dict(r) for r in conn.execute(select(t).order_by(*t.primary_key.columns)).mappings()]
                for t in tables()
            }
    finally:
        engine.dispose()


def dklb(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out + err


@pytest.fixture(autouse=True)
def _clean(no_dklb_environment: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(database, "SECRETS", set())


def test_migrate_copies_a_controllers_database_to_postgresql_and_back(
    capsys: pytest.CaptureFixture[str], controller_db: Path, postgres_url: str, tmp_path: Path
) -> None:
    password = make_url(postgres_url).password
    assert password
    code, text = dklb(capsys, "migrate", "--from", str(controller_db), "--to", postgres_url)
    assert code == 0, text
    assert password not in text and "copied" in text and "2 bindings" in text
    source = dump(str(controller_db))
    assert source["history"] and source["pools"] and source["bindings"]
    assert dump(postgres_url) == source
    # A second copy would merge two worlds: refused, nothing written.
    code, text = dklb(capsys, "migrate", "--from", str(controller_db), "--to", postgres_url)
    assert code == 1 and "is not empty (rows in" in text and password not in text
    assert dump(postgres_url) == source
    # The sequence continues after the copied ids: the next history row gets a new one.
    engine = make_engine(database_url(postgres_url).replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.begin() as conn:
            row = {k: v for k, v in source["history"][-1].items() if k != "id"}
            new_id = conn.execute(insert(HISTORY).values(**row).returning(HISTORY.c.id)).scalar_one()
    finally:
        engine.dispose()
    assert new_id == max(h["id"] for h in source["history"]) + 1
    # And back into a new SQLite file: the same rows (and the new one).
    back = tmp_path / "back.db"
    code, text = dklb(capsys, "migrate", "--from", postgres_url, "--to", str(back))
    assert code == 0, text
    assert password not in text
    again = dump(str(back))
    assert {k: v for k, v in again.items() if k != "history"} == {
        k: v for k, v in source.items() if k != "history"
    }
    assert again["history"][:-1] == source["history"] and again["history"][-1]["id"] == new_id
    # The operator commands read either store alike.
    assert dklb(capsys, "inspect", "--database", postgres_url) == dklb(
        capsys, "inspect", "--database", str(back)
    )


def test_migrate_refuses_an_unmigrated_source(
    capsys: pytest.CaptureFixture[str], postgres_url: str, tmp_path: Path
) -> None:
    (tmp_path / "empty.db").touch()
    code, text = dklb(capsys, "migrate", "--from", str(tmp_path / "empty.db"), "--to", postgres_url)
    assert code == 1 and "has no dklb schema" in text


@pytest.fixture(scope="module")
def tls_server() -> Iterator[localpg.LocalPostgres]:
    server = localpg.start(tls=True)
    try:
        yield server
    finally:
        localpg.remove(server)


@pytest.fixture
def tls_db(tls_server: localpg.LocalPostgres) -> Iterator[str]:
    tls_server.create_database("tls")
    try:
        yield tls_server.url("tls")
    finally:
        tls_server.drop_database("tls")


def test_password_file_dsn_file_and_ca_file(
    capsys: pytest.CaptureFixture[str], tls_server: localpg.LocalPostgres, tls_db: str, tmp_path: Path
) -> None:
    url = make_url(tls_db)
    password = tls_server.password
    bare = f"postgresql://{url.username}@{url.host}:{url.port}/{url.database}"
    password_file = tmp_path / "password"
    password_file.write_text(password + "\n")
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(tls_db + "\n")
    assert dklb(capsys, "migrate", "--database-url-file", str(dsn_file))[0] == 0
    code, text = dklb(
        capsys,
        "inspect",
        "--database",
        bare,
        "--database-password-file",
        str(password_file),
        "--database-ca-file",
        str(tls_server.ca_file),
    )
    assert code == 0 and "no bindings" in text, text
    # Without the password: the server says so; the message names the database, not a secret.
    code, text = dklb(capsys, "inspect", "--database", bare)
    assert code == 1 and "password" in text and password not in text
    # A CA that did not sign the server's certificate: refused, and the message names the flag.
    wrong = "/etc/ssl/certs/ca-certificates.crt"
    code, text = dklb(capsys, "inspect", "--database-url-file", str(dsn_file), "--database-ca-file", wrong)
    assert code == 1 and "certificate verify failed" in text
    assert f"--database-ca-file {wrong}" in text and password not in text


def test_the_password_is_in_no_log_line_of_dklb_run(
    capsys: pytest.CaptureFixture[str], postgres_url: str, tmp_path: Path
) -> None:
    """``dklb run`` migrates the database, then cannot reach a cluster; whatever it logs (and what
    the controller would log naming its database) shows no password."""
    password = make_url(postgres_url).password
    assert password
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    # The kubeconfig is read after the migration: a missing one stops it there.
    with contextlib.suppress(ConfigException):
        cli.main(
            [
                "run",
                "--database",
                postgres_url,
                "--edgelb-url",
                "http://127.0.0.1:9",
                "--kubeconfig",
                str(tmp_path / "missing-kubeconfig"),
                "--leader-elect=false",
            ]
        )
    try:
        # The line the controller logs once running (engine.app), here after the failed start.
        logging.getLogger("dklb.app").warning("dklb running: database %s", database_url(postgres_url))
        out, err = capsys.readouterr()
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    text = out + err
    assert "Running upgrade" in text
    assert "dklb running: database postgresql+psycopg://dklb_admin:***@127.0.0.1" in text
    assert password not in text


def test_a_copy_that_fails_leaves_the_target_empty(
    controller_db: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One transaction on the target: a failure after every row was inserted (here, resetting
    the sequences) leaves nothing behind, and the copy can simply be run again."""
    target = database_url(postgres_url)
    assert dklb_migrate(target) == 0

    def broken(conn: Any) -> None:
        raise RuntimeError("the server went away")

    monkeypatch.setattr(copy, "_reset_sequences", broken)
    with pytest.raises(RuntimeError):
        copy.copy_database(database_url(str(controller_db)), target)
    assert all(rows == [] for rows in dump(postgres_url).values())
    monkeypatch.undo()
    copied = copy.copy_database(database_url(str(controller_db)), target)
    assert copied == {name: len(rows) for name, rows in dump(str(controller_db)).items()}


def dklb_migrate(target: str) -> int:
    return cli.main(["migrate", "--database", target])
