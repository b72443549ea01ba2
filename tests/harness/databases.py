"""Fresh, already-migrated MLflow databases on SQLite, PostgreSQL and MariaDB/MySQL.

Migrating an empty database is a large share of `mlflow server` startup, so each backend is
migrated once (`mlflow db upgrade`) into a template that new databases are copied from:
SQLite copies the file (cached across sessions, keyed by MLflow version), PostgreSQL uses
`CREATE DATABASE ... TEMPLATE`, MySQL replays the template's `SHOW CREATE` DDL.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib.metadata
import itertools
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from tests.harness.process import clean_environ

BACKENDS = ("sqlite", "postgresql", "mysql")
POSTGRES = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
MYSQL = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}

# Every database this harness creates is named mlflowsync_<pid>_<n>, so databases left behind
# by a killed test session can be recognised and dropped.
_NAME_PREFIX = "mlflowsync_"
_names = itertools.count(1)

# table -> (columns, rows); the rows a freshly started server has (Default experiment, ...).
Baseline = dict[str, tuple[list[str], list[tuple]]]


@functools.cache
def backend_available(name: str) -> bool:
    """True when `name` can be used here: SQLite always, the servers if they accept a login."""
    if name == "sqlite":
        return True
    try:
        with _server_cursor(name):
            return True
    except Exception:
        return False


def create_database(backend: str, workdir: Path) -> Database:
    """A new migrated, empty MLflow database (SQLite files go to `workdir`)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    name = f"{_NAME_PREFIX}{os.getpid()}_{next(_names)}"
    if backend == "sqlite":
        path = Path(workdir) / f"{name}.db"
        shutil.copyfile(_templates.sqlite(), path)
        return SqliteDatabase(path)
    if backend == "postgresql":
        template = _templates.postgres()
        with _server_cursor("postgresql") as cur:
            cur.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return PostgresDatabase(name)
    ddl, seed = _templates.mysql()
    with _server_cursor("mysql") as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
        cur.execute(f"USE `{name}`")
        cur.execute("SET FOREIGN_KEY_CHECKS=0")
        for statement in ddl:
            cur.execute(statement)
    database = MysqlDatabase(name)
    database.restore(seed)
    return database


class Database:
    """One MLflow database; `snapshot()` + `restore()` empty it again while a server uses it."""

    backend: str
    uri: str
    placeholder = "%s"
    dual = ""  # what "SELECT 'x' <dual> WHERE ..." needs to be valid SQL

    def connect(self):
        raise NotImplementedError

    def quote(self, identifier: str) -> str:
        return f'"{identifier}"'

    def tables(self, cur) -> list[str]:
        raise NotImplementedError

    def exists(self) -> bool:
        raise NotImplementedError

    def drop(self) -> None:
        raise NotImplementedError

    def _delete_rows(self, cur, tables: list[str]) -> None:
        raise NotImplementedError

    def _restart_ids(self, cur) -> None:
        """Make auto-increment ids start at 1 again (MLflow's experiment ids, ...)."""
        raise NotImplementedError

    def snapshot(self) -> Baseline:
        baseline: Baseline = {}
        conn = self.connect()
        try:
            cur = conn.cursor()
            for table in self.tables(cur):
                cur.execute(f"SELECT * FROM {self.quote(table)}")
                rows = [tuple(row) for row in cur.fetchall()]
                if rows:
                    baseline[table] = ([col[0] for col in cur.description], rows)
        finally:
            conn.close()
        return baseline

    def restore(self, baseline: Baseline) -> None:
        """Make the database hold exactly `baseline` again, ids restarting as in a new database.

        Only tables that have rows are touched: emptying all ~65 tables took up to 2 s.
        """
        conn = self.connect()
        try:
            cur = conn.cursor()
            probes = " UNION ALL ".join(
                f"SELECT '{t}'{self.dual} WHERE EXISTS (SELECT 1 FROM {self.quote(t)})"
                for t in self.tables(cur)
            )
            cur.execute(probes)
            non_empty = [row[0] for row in cur.fetchall()]
            if non_empty:
                self._delete_rows(cur, non_empty)
            self._restart_ids(cur)
            for table, (columns, rows) in baseline.items():
                names = ", ".join(self.quote(c) for c in columns)
                marks = ", ".join([self.placeholder] * len(columns))
                cur.executemany(f"INSERT INTO {self.quote(table)} ({names}) VALUES ({marks})", rows)
            conn.commit()
        finally:
            conn.close()


class SqliteDatabase(Database):
    backend = "sqlite"
    placeholder = "?"

    def __init__(self, path: Path):
        self.path = Path(path)
        self.uri = f"sqlite:///{self.path}"

    def connect(self):
        conn = sqlite3.connect(self.path, timeout=30)
        conn.execute("PRAGMA foreign_keys=OFF")
        return conn

    def tables(self, cur) -> list[str]:
        cur.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
        return [row[0] for row in cur.fetchall()]

    def _delete_rows(self, cur, tables: list[str]) -> None:
        for table in tables:
            cur.execute(f"DELETE FROM {self.quote(table)}")

    def _restart_ids(self, cur) -> None:
        cur.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'")
        if cur.fetchone():
            cur.execute("DELETE FROM sqlite_sequence")

    def exists(self) -> bool:
        return self.path.exists()

    def drop(self) -> None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)


class PostgresDatabase(Database):
    backend = "postgresql"

    def __init__(self, name: str):
        self.name = name
        # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; the harness uses psycopg2.
        self.uri = "postgresql+psycopg2://{user}@{host}:{port}/".format(**POSTGRES) + name

    def connect(self):
        import psycopg2

        conn = psycopg2.connect(dbname=self.name, connect_timeout=5, **POSTGRES)
        with conn.cursor() as cur:
            cur.execute("SET lock_timeout = '20s'")
        return conn

    def tables(self, cur) -> list[str]:
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return [row[0] for row in cur.fetchall()]

    def _delete_rows(self, cur, tables: list[str]) -> None:
        # Skip foreign-key triggers for this transaction (needs a superuser, which the harness
        # uses): DELETE in any order is ~5x faster than TRUNCATE ... CASCADE here.
        cur.execute("SET LOCAL session_replication_role = replica")
        for table in tables:
            cur.execute(f"DELETE FROM {self.quote(table)}")

    def _restart_ids(self, cur) -> None:
        cur.execute(
            "SELECT sequencename FROM pg_sequences "
            "WHERE schemaname = 'public' AND last_value IS NOT NULL"
        )
        for (sequence,) in cur.fetchall():
            cur.execute(f"ALTER SEQUENCE {self.quote(sequence)} RESTART")

    def exists(self) -> bool:
        return self.name in _server_databases("postgresql")

    def drop(self) -> None:
        _drop_server_database("postgresql", self.name)


class MysqlDatabase(Database):
    backend = "mysql"
    dual = " FROM DUAL"

    def __init__(self, name: str):
        self.name = name
        self.uri = "mysql+pymysql://{user}@{host}:{port}/".format(**MYSQL) + name

    def connect(self):
        import pymysql

        conn = pymysql.connect(database=self.name, connect_timeout=5, **MYSQL)
        with conn.cursor() as cur:
            cur.execute("SET FOREIGN_KEY_CHECKS=0")
            # Lets the Default experiment keep id 0 on an AUTO_INCREMENT column.
            cur.execute("SET SESSION sql_mode='NO_AUTO_VALUE_ON_ZERO'")
        return conn

    def quote(self, identifier: str) -> str:
        return f"`{identifier}`"

    def tables(self, cur) -> list[str]:
        cur.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE'"
        )
        return [row[0] for row in cur.fetchall()]

    def _delete_rows(self, cur, tables: list[str]) -> None:
        for table in tables:
            cur.execute(f"DELETE FROM {self.quote(table)}")

    def _restart_ids(self, cur) -> None:
        cur.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = DATABASE() AND auto_increment > 1"
        )
        for (table,) in cur.fetchall():
            cur.execute(f"ALTER TABLE {self.quote(table)} AUTO_INCREMENT = 1")

    def exists(self) -> bool:
        return self.name in _server_databases("mysql")

    def drop(self) -> None:
        _drop_server_database("mysql", self.name)


@contextlib.contextmanager
def _server_cursor(backend: str, database: str | None = None):
    """An autocommit cursor on the PostgreSQL/MySQL server (its maintenance database by default)."""
    if backend == "postgresql":
        import psycopg2

        conn = psycopg2.connect(dbname=database or "postgres", connect_timeout=3, **POSTGRES)
        conn.autocommit = True
    else:
        import pymysql

        conn = pymysql.connect(database=database, connect_timeout=3, autocommit=True, **MYSQL)
    try:
        yield conn.cursor()
    finally:
        conn.close()


def _drop_server_database(backend: str, name: str) -> None:
    with _server_cursor(backend) as cur:
        if backend == "postgresql":
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


def _server_databases(backend: str) -> list[str]:
    with _server_cursor(backend) as cur:
        if backend == "postgresql":
            cur.execute("SELECT datname FROM pg_database")
        else:
            cur.execute("SHOW DATABASES")
        return [row[0] for row in cur.fetchall()]


def _drop_orphans(backend: str) -> None:
    """Drop databases of earlier harness processes that no longer run (killed sessions)."""
    for name in _server_databases(backend):
        match = re.fullmatch(rf"{_NAME_PREFIX}(?:tmpl_)?(\d+)(?:_\d+)?", name)
        if match and not _pid_alive(int(match.group(1))):
            _drop_server_database(backend, name)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _mlflow_db_upgrade(uri: str) -> None:
    env = {**clean_environ(), "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    result = subprocess.run(
        [sys.executable, "-m", "mlflow", "db", "upgrade", uri],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        raise RuntimeError(f"mlflow db upgrade {uri} failed:\n{result.stdout}\n{result.stderr}")


class _Templates:
    """Migrated template per backend, made on first use; PostgreSQL's is dropped at exit."""

    def __init__(self):
        self._lock = threading.Lock()
        self._sqlite: Path | None = None
        self._postgres: str | None = None
        self._mysql: tuple[list[str], Baseline] | None = None

    def sqlite(self) -> Path:
        with self._lock:
            if self._sqlite is None:
                version = importlib.metadata.version("mlflow")
                cache = Path(tempfile.gettempdir()) / "mlflow-sync-harness"
                cache.mkdir(exist_ok=True)
                path = cache / f"sqlite-template-mlflow-{version}.db"
                if not path.exists():
                    # Migrate under a private name, then rename: concurrent sessions never see
                    # a half-migrated file.
                    partial = cache / f"{path.name}.{os.getpid()}.partial"
                    partial.unlink(missing_ok=True)
                    _mlflow_db_upgrade(f"sqlite:///{partial}")
                    os.replace(partial, path)
                self._sqlite = path
            return self._sqlite

    def postgres(self) -> str:
        with self._lock:
            if self._postgres is None:
                _drop_orphans("postgresql")
                name = f"{_NAME_PREFIX}tmpl_{os.getpid()}"
                _drop_server_database("postgresql", name)
                with _server_cursor("postgresql") as cur:
                    cur.execute(f'CREATE DATABASE "{name}"')
                _mlflow_db_upgrade(PostgresDatabase(name).uri)
                self._postgres = name
            return self._postgres

    def mysql(self) -> tuple[list[str], Baseline]:
        """DDL of every table and trigger of a migrated database, and its seed rows."""
        with self._lock:
            if self._mysql is None:
                _drop_orphans("mysql")
                name = f"{_NAME_PREFIX}tmpl_{os.getpid()}"
                _drop_server_database("mysql", name)
                with _server_cursor("mysql") as cur:
                    cur.execute(f"CREATE DATABASE `{name}`")
                try:
                    template = MysqlDatabase(name)
                    _mlflow_db_upgrade(template.uri)
                    with _server_cursor("mysql", name) as cur:
                        ddl = []
                        for table in template.tables(cur):
                            cur.execute(f"SHOW CREATE TABLE `{table}`")
                            ddl.append(cur.fetchone()[1])
                        cur.execute(
                            "SELECT trigger_name FROM information_schema.triggers "
                            "WHERE trigger_schema = DATABASE()"
                        )
                        for (trigger,) in cur.fetchall():
                            cur.execute(f"SHOW CREATE TRIGGER `{trigger}`")
                            ddl.append(cur.fetchone()[2])
                    self._mysql = (ddl, template.snapshot())
                finally:
                    _drop_server_database("mysql", name)
            return self._mysql

    def close(self) -> None:
        with self._lock:
            if self._postgres is not None:
                _drop_server_database("postgresql", self._postgres)
                self._postgres = None


_templates = _Templates()
atexit.register(_templates.close)
