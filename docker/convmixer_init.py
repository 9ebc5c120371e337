"""Small steps of the airflow-init service that the Airflow CLI has no command for (see docker/airflow-init.sh).

    python convmixer_init.py create-database URL           the metrics database, if it does not exist yet
    python convmixer_init.py connection-json URL           an Airflow Connection (JSON) for a SQLAlchemy URL
    python convmixer_init.py write-password FILE USER      SimpleAuthManager's passwords file: USER's entry set
                                                           to $_AIRFLOW_WWW_USER_PASSWORD (not argv: ps shows it)

Each step is idempotent: airflow-init runs on every `docker compose up`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# Airflow's connection type for each SQLAlchemy backend the metrics store supports.
CONN_TYPES = {"postgresql": "postgres", "sqlite": "sqlite"}
PASSWORD_ENV = "_AIRFLOW_WWW_USER_PASSWORD"  # the official compose's name for the admin password
CONNECT_ATTEMPTS = 30  # PostgreSQL reports healthy a moment before it accepts a CREATE DATABASE


def create_database(url: str, attempts: int = CONNECT_ATTEMPTS) -> bool:
    """Create the database ``url`` names when it is missing; True when it was created.

    PostgreSQL: connects to the server's ``postgres`` database with the same credentials and runs CREATE DATABASE
    (which cannot run inside a transaction, hence AUTOCOMMIT). SQLite: creates the parent folder.
    """
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    target = make_url(url)
    backend = target.get_backend_name()
    if backend == "sqlite":
        if not target.database or target.database == ":memory:":
            raise SystemExit(f"the metrics URL {target!r} names no SQLite file; give a path, sqlite:////abs/file.db")
        Path(target.database).parent.mkdir(parents=True, exist_ok=True)
        return False
    if backend != "postgresql":
        raise SystemExit(f"metrics database backend {backend!r} is not supported here; use postgresql:// or sqlite://")
    if not target.database:
        raise SystemExit(f"the metrics URL {target.render_as_string(hide_password=True)} names no database")

    engine = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        for attempt in range(1, attempts + 1):
            try:
                with engine.connect() as conn:
                    exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :name"),
                                          {"name": target.database}).first()
                    if exists:
                        return False
                    quoted = conn.dialect.identifier_preparer.quote(target.database)
                    conn.execute(text(f"CREATE DATABASE {quoted}"))
                    return True
            except Exception as exc:  # OperationalError while the server starts; anything else repeats and ends
                if attempt == attempts:
                    raise SystemExit(f"cannot create database {target.database!r} on "
                                     f"{target.render_as_string(hide_password=True)}: {exc}") from exc
                time.sleep(1)
    finally:
        engine.dispose()
    return False


def connection_json(url: str) -> str:
    """The Airflow Connection for a SQLAlchemy URL, as ``airflow connections add --conn-json`` takes it.

    JSON rather than a URI: Airflow would otherwise have to re-parse a password with URL-special characters.
    """
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend not in CONN_TYPES:
        raise SystemExit(f"metrics database backend {backend!r} has no Airflow connection type here; "
                         f"use one of {sorted(CONN_TYPES)}")
    if backend == "sqlite":  # flow.connection_url reads a SQLite file from the host field
        return json.dumps({"conn_type": "sqlite", "host": parsed.database})
    fields = {"conn_type": CONN_TYPES[backend], "host": parsed.host, "port": parsed.port,
              "login": parsed.username, "password": parsed.password, "schema": parsed.database}
    return json.dumps({key: value for key, value in fields.items() if value is not None})


def write_password(path: str | os.PathLike, user: str, password: str) -> None:
    """Set ``user``'s password in SimpleAuthManager's JSON passwords file, keeping the other users' entries.

    Written to a temporary file and renamed, mode 0600: the file holds plain-text passwords.
    """
    if not user or ":" in user or "," in user:
        raise SystemExit(f"admin user name {user!r} is empty or has ':' or ','; fix _AIRFLOW_WWW_USER_USERNAME")
    if not password:
        raise SystemExit("the admin password is empty; set _AIRFLOW_WWW_USER_PASSWORD in docker/.env")
    target = Path(path)
    passwords: dict[str, str] = {}
    if target.exists() and target.read_text().strip():
        try:
            passwords = json.loads(target.read_text())
        except json.JSONDecodeError as exc:
            raise SystemExit(f"{target} is not JSON ({exc}); delete it and run airflow-init again") from exc
    passwords[user] = password
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(passwords, out)
        out.write("\n")
    os.replace(partial, target)


def npu_pools() -> list[tuple[str, int]]:
    """(pool, slots) airflow-init creates: the untyped NPU pool, and each chip type's of ``[convmixer] chips``
    (named by ``npu_pool_template``, NPU_POOL_SLOTS slots each), as the DAG reads the same settings."""
    from convmixer_tasks.run.settings import env_reader, load_scheduling_settings

    settings = load_scheduling_settings(env_reader())
    chips: tuple[str | None, ...] = (None, *settings.chips)
    return [(settings.pool_for(chip), settings.npu_pool_slots) for chip in chips]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="convmixer_init.py", description=__doc__.split("\n\n")[0])
    steps = parser.add_subparsers(dest="step", required=True)
    steps.add_parser("create-database").add_argument("url")
    steps.add_parser("connection-json").add_argument("url")
    steps.add_parser("npu-pools")
    write = steps.add_parser("write-password")
    write.add_argument("file")
    write.add_argument("user")
    args = parser.parse_args(argv)
    if args.step == "create-database":
        created = create_database(args.url)
        print("created" if created else "exists")
    elif args.step == "npu-pools":
        print("\n".join(f"{pool} {slots}" for pool, slots in npu_pools()))
    elif args.step == "connection-json":
        print(connection_json(args.url))
    else:
        write_password(args.file, args.user, os.environ.get(PASSWORD_ENV, ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
