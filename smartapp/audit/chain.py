"""Linking events into the chain, inside the caller's transaction, without ever forking it.

`append` only notes the event on the caller's session. The link (seq, time, prev_hash, hash) is
made when the session next flushes (explicitly, before a query, or at commit: `UnitOfWork`'s
`BEFORE_FLUSH`, and `before_commit` for a session with nothing else to flush), under the chain
lock, right before the INSERT (Core: the event is no ORM object of the session); the lock is
held until that transaction ends (commit or rollback) and no longer. So an event commits with
the change it records, or not at all, and the lock covers only flush + commit.

The chain lock:
- PostgreSQL: `pg_advisory_xact_lock(ADVISORY_KEY)` in the caller's transaction; it is released
  by the commit/rollback itself. Works across processes and hosts. The head is read after the
  lock is granted; under READ COMMITTED (PostgreSQL's default, which `Database` keeps) that read
  sees the previous holder's committed event.
- SQLite: a process-wide lock per database file (threads queue on it instead of spinning in
  SQLite's busy handler), then `BEGIN IMMEDIATE` so the write lock on the file is taken before
  the head is read: another process appending to the same file waits (busy_timeout) instead of
  forking the chain.
- Belt and braces: `seq` is the primary key, so two links to the same head cannot both commit.

Every `every` events (default 100) a checkpoint, signed with the app's key, is written in the
same flush. The signer comes from `configure(engine, ...)` if called, else from the Flask app in
context (`AUDIT_SIGNING_KEY`, `AUDIT_CHECKPOINT_EVERY`), else checkpoints are deferred: the next
append that has a signer catches up (a checkpoint is due when >= `every` events are unsigned).

Outside the demo and the tests the key must not lie in the SQLite database's folder
(`signing_key_problem`; by default it is in the instance folder, where the default database is
too): a key beside the data lets whoever copies or edits the data re-sign a rewritten log.
Each checkpoint, once committed, is also appended to AUDIT_CHECKPOINT_SINK when set
(`smartapp.audit.kept`: checkpoints kept off the box).
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask, current_app, has_app_context
from sqlalchemy import Connection, Engine, event, func, insert, make_url, select, text
from sqlalchemy.orm import Session, SessionTransaction

from smartapp.audit import kept
from smartapp.audit.canonical import GENESIS, checkpoint_payload, event_hash, sorted_data
from smartapp.audit.models import LogCheckpoint, LogEvent
from smartapp.audit.signing import DEFAULT_KEY_FILE, Signer, load_signer
from smartapp.db import BEFORE_FLUSH, Database, utcnow

log = logging.getLogger("handoff.audit")

DEFAULT_EVERY = 100
# Advisory lock id for the chain (PostgreSQL): the bytes of "HandoffL", a signed 64-bit int.
ADVISORY_KEY = int.from_bytes(b"HandoffL", "big", signed=True)
LOCK_TIMEOUT = 30.0
APP_EXTENSION = "handoff.audit"

_PENDING = "handoff.audit.pending"  # session.info: events added, not yet linked
#: session.info: the events this transaction inserted (read by smartapp.ops.events)
LINKED = "handoff.audit.linked"
_HELD = "handoff.audit.held"  # session.info: this session's transaction holds the chain lock
_SIGNED = "handoff.audit.signed"  # session.info: checkpoints made, for the sink after commit


class ChainLockError(RuntimeError):
    """The chain lock could not be taken (timeout, or the same thread already holds it)."""


class NoSignerError(RuntimeError):
    """A checkpoint was asked for where no signing key is configured."""


@dataclass(frozen=True)
class Checkpointing:
    """Who signs checkpoints, and how often."""

    signer: Signer | None
    every: int = DEFAULT_EVERY
    sink: Path | None = None  # file each committed checkpoint is appended to
    problem: str | None = None  # why there is no signer (a refused key location)


_configured: weakref.WeakKeyDictionary[Engine, Checkpointing] = weakref.WeakKeyDictionary()
_warned_unsigned = False


def configure(
    bind: Engine | Database,
    *,
    signer: Signer | None,
    every: int = DEFAULT_EVERY,
    sink: str | Path | None = None,
) -> None:
    """Set the checkpoint signer (and sink) for one database (CLI, workers, tests); overrides
    the app's."""
    if every < 1:
        raise ValueError("checkpoints: every must be at least 1")
    engine = bind.engine if isinstance(bind, Database) else bind
    _configured[engine] = Checkpointing(signer, every, Path(sink) if sink else None)


def signing_key_path(app: Flask) -> Path:
    """`AUDIT_SIGNING_KEY` if set, else the PEM in the app's instance folder (demo, tests)."""
    configured = app.config.get("AUDIT_SIGNING_KEY")
    return Path(configured) if configured else Path(app.instance_path) / DEFAULT_KEY_FILE


def data_folder(app: Flask) -> Path | None:
    """The folder of the SQLite database file (None for a server database): the data a copy of
    which must not carry the key."""
    default = f"sqlite:///{Path(app.instance_path) / 'handoff.sqlite'}"
    url = app.config.get("DATABASE_URL") or default
    if not url.startswith("sqlite"):
        return None
    database = make_url(url).database
    if not database or database == ":memory:":
        return None
    return Path(database).expanduser().resolve().parent


def demo_or_test(app: Flask) -> bool:
    return bool(app.config.get("DEMO") or app.testing)


def signing_key_problem(app: Flask) -> str | None:
    """Why the app may not sign with the key where it is; None when it may. In the demo and
    the tests the key may sit beside the data; elsewhere never in the SQLite database's folder
    (the same rule start-up applies to every key), whatever the command."""
    if demo_or_test(app):
        return None
    folder = data_folder(app)
    path = signing_key_path(app).expanduser().resolve()
    if folder is not None and path.is_relative_to(folder):
        return (
            f"the audit signing key {path} lies in {folder}, the folder of the database: "
            "whoever can copy or edit the data could re-sign a rewritten log. Set "
            "AUDIT_SIGNING_KEY (HANDOFF_AUDIT_SIGNING_KEY) to a path outside it."
        )
    return None


def app_checkpointing(app: Flask) -> Checkpointing:
    """The app's signer (its key generated on first use), interval and sink, made once per app.

    Where the key's location is refused (`signing_key_problem`) there is no signer and
    `problem` says why: checkpoints wait (verify reports a long unsigned run), nothing fails.
    """
    found = app.extensions.get(APP_EXTENSION)
    if found is None:
        every = max(int(app.config.get("AUDIT_CHECKPOINT_EVERY") or DEFAULT_EVERY), 1)
        sink = app.config.get("AUDIT_CHECKPOINT_SINK")
        problem = signing_key_problem(app)
        if problem:
            log.error("checkpoints are not signed: %s", problem)
        signer = None if problem else load_signer(signing_key_path(app))
        found = Checkpointing(signer, every, Path(sink) if sink else None, problem)
        app.extensions[APP_EXTENSION] = found
    return found


def _checkpointing(session: Session) -> Checkpointing | None:
    bind = session.get_bind()
    engine = bind.engine if isinstance(bind, Connection) else bind
    found = _configured.get(engine)
    if found is not None:
        return found
    if has_app_context():
        return app_checkpointing(current_app)
    global _warned_unsigned
    if not _warned_unsigned:
        _warned_unsigned = True
        log.warning("no checkpoint signing key here (no app, not configured); checkpoints wait")
    return None


def add(session: Session, entry: LogEvent) -> None:
    """Put an event in the caller's unit of work; it is linked when the session flushes
    (`Database.session`'s sessions flush it before a query and at commit; any session links
    it at commit). The entry stays outside the session: it is inserted by Core."""
    session.info.setdefault(_PENDING, []).append(entry)
    session.info[BEFORE_FLUSH] = _link


# -- the lock ---------------------------------------------------------------------------------


class _ProcessLock:
    """The writers' lock for one SQLite file: a thread lock that knows its holder (a thread
    asking twice, two sessions appending at once in one thread, is a certain deadlock on
    SQLite: it fails fast instead), then an exclusive `flock` on `<database>.writer-lock`
    beside the file, so the writers of several processes (gunicorn's workers, the outbox
    worker) queue in the kernel and the next one is woken as soon as the lock is free,
    instead of polling SQLite's write lock with its busy handler's sleeps of up to 100 ms (the
    long tail of every writer under load). A process that dies lets go of it with its files."""

    def __init__(self, path: str | None = None) -> None:
        self._lock = threading.Lock()
        self.owner: int | None = None
        self._path = path  # None: a database in memory (one process)
        self._descriptor: tuple[int, int] | None = None  # (pid, fd): one per process

    def acquire(self) -> None:
        me = threading.get_ident()
        if self.owner == me:
            raise ChainLockError(
                "this thread already holds the referral log lock in another session; "
                "finish that unit of work before appending in a second one"
            )
        if not self._lock.acquire(timeout=LOCK_TIMEOUT):
            raise ChainLockError(f"referral log lock not granted within {LOCK_TIMEOUT:.0f} s")
        self.owner = me
        try:
            if self._path is not None:
                fcntl.flock(self._fd(), fcntl.LOCK_EX)
        except BaseException:
            self.owner = None
            self._lock.release()
            raise

    def release(self) -> None:
        try:
            if self._path is not None and self._descriptor is not None:
                pid, fd = self._descriptor
                if pid == os.getpid():
                    fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            self.owner = None
            self._lock.release()

    def _fd(self) -> int:
        """This process's descriptor of the lock file (a forked worker opens its own: a
        descriptor inherited from the parent would share the parent's lock)."""
        pid = os.getpid()
        if self._descriptor is None or self._descriptor[0] != pid:
            assert self._path is not None
            self._descriptor = (pid, os.open(self._path, os.O_CREAT | os.O_RDWR, 0o600))
        return self._descriptor[1]


_file_locks: dict[str, _ProcessLock] = {}
_file_locks_guard = threading.Lock()


def _file_lock(engine: Engine) -> _ProcessLock:
    """One lock per database file, shared by every engine on that file in this process."""
    key = _lock_key(engine.url.database or "")
    with _file_locks_guard:
        found = _file_locks.get(key)
        if found is None:
            in_memory = key in ("", ":memory:") or key.startswith("file::memory:")
            found = _file_locks[key] = _ProcessLock(None if in_memory else f"{key}.writer-lock")
        return found


@functools.lru_cache(maxsize=64)
def _lock_key(database: str) -> str:
    """The database file's real path (resolved once: every write asks)."""
    return database if database in ("", ":memory:") else str(Path(database).resolve())


def _lock(session: Session) -> None:
    """Take the chain lock for the rest of this session's transaction (once)."""
    if session.info.get(_HELD):
        return
    connection = session.connection()
    dialect = connection.dialect.name
    if dialect == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_KEY})
        session.info[_HELD] = True
        return
    lock = _file_lock(connection.engine)
    lock.acquire()
    session.info[_HELD] = lock
    if dialect == "sqlite":
        try:
            driver = connection.connection.driver_connection
            assert driver is not None  # a live pysqlite connection
            if not driver.in_transaction:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            session.info.pop(_HELD, None)
            lock.release()
            raise


def lock(session: Session) -> None:
    """Take the chain lock for the rest of this session's transaction: for what must not race
    an append (a summary kept beside the log, brought up to its head)."""
    _lock(session)


@event.listens_for(Session, "after_transaction_end")
def _release(session: Session, transaction: SessionTransaction) -> None:
    """The transaction is over (committed, rolled back or closed): let the next appender in."""
    if transaction.parent is not None:
        return
    session.info.pop(_PENDING, None)
    session.info.pop(BEFORE_FLUSH, None)
    session.info.pop(LINKED, None)  # counted after the commit, or rolled back
    held = session.info.pop(_HELD, None)
    if isinstance(held, _ProcessLock):
        held.release()


@event.listens_for(Session, "after_rollback")
def _forget_pending(session: Session) -> None:
    """Rolled-back events must not be linked later, nor counted, nor their checkpoints kept:
    their rows (those inserted already) are gone with the rollback."""
    session.info.pop(_PENDING, None)
    session.info.pop(_SIGNED, None)
    session.info.pop(LINKED, None)


@event.listens_for(Session, "after_commit")
def _keep_signed(session: Session) -> None:
    """Append the checkpoints this transaction committed to the sink (off the box). Never
    before the commit: a rolled-back checkpoint kept outside would contradict the log."""
    for sink, made in session.info.pop(_SIGNED, []):
        try:
            kept.append(sink, [made])
        except OSError as exc:
            log.error(
                "checkpoint #%s was not kept in %s (%s); `handoff audit checkpoint --export` "
                "can add it later",
                made.seq,
                sink,
                exc.strerror,
            )


def _remember_for_sink(session: Session, checkpointing: Checkpointing | None, made) -> None:
    if checkpointing and checkpointing.sink:
        copy = kept.KeptCheckpoint(
            made.seq, made.hash, made.at, made.prev_seq, made.key_id, made.signature
        )
        session.info.setdefault(_SIGNED, []).append((checkpointing.sink, copy))


# -- linking ----------------------------------------------------------------------------------


_HEAD = (
    select(LogEvent.seq, LogEvent.hash, select(func.max(LogCheckpoint.seq)).scalar_subquery())
    .order_by(LogEvent.seq.desc())
    .limit(1)
)


def read_head(session: Session) -> tuple[int, str, int]:
    """(head seq, head hash, last checkpoint seq) in one round trip; (0, GENESIS, 0) if empty.

    Core on the session's connection (same transaction), not ORM: this runs on every append.
    """
    return _head_of(session.connection().execute(_HEAD).first())


def _head_of(row: Any) -> tuple[int, str, int]:
    """A head row (seq, hash, last checkpoint seq) as numbers; the genesis for no row."""
    if row is None:
        return 0, GENESIS, 0
    return int(row[0]), row[1], int(row[2] or 0)


@functools.cache
def _lock_then_head_sql() -> str:
    """PostgreSQL: the advisory lock, then the head, as two statements of one simple query
    (no parameters: the key and the limit are constants written in)."""
    from sqlalchemy.dialects import postgresql

    head = _HEAD.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
    return f"SELECT pg_advisory_xact_lock({int(ADVISORY_KEY)}); {head}"


def lock_and_read_head(session: Session) -> tuple[int, str, int]:
    """Take the chain lock (`_lock`) and read the head (`read_head`): on PostgreSQL, when the
    lock is not held yet, in one round trip instead of two (this runs on every append).

    Still read after the lock is granted: the server runs the statements of a simple query
    in order, and under READ COMMITTED each takes its own snapshot when it starts, so the
    head statement sees the event the lock's previous holder committed (PostgreSQL's
    "Multiple Statements in a Simple Query"; tests/audit/test_concurrency.py races it)."""
    if not session.info.get(_HELD):
        connection = session.connection()
        if connection.dialect.name == "postgresql":
            driver: Any = connection.connection.driver_connection
            with driver.cursor() as cursor:
                cursor.execute(_lock_then_head_sql())  # no parameters: the simple protocol
                if not cursor.nextset():  # pragma: no cover - the server sends both results
                    raise RuntimeError("the chain head was not read after its lock")
                row = cursor.fetchone()
            session.info[_HELD] = True
            return _head_of(row)
    _lock(session)
    return read_head(session)


_INSERT_EVENTS = insert(LogEvent.__table__)  # type: ignore[arg-type]
_COLUMNS = tuple(column.key for column in LogEvent.__table__.columns)


@event.listens_for(Session, "before_commit")
def _link(session: Session) -> None:
    """Give each pending event its place in the chain, under the lock, and INSERT them in one
    Core statement on the session's connection (every write appends at least one: as ORM
    objects, the session's flush cost more than linking and hashing them). The entries the
    caller holds get their seq, time and hashes; they are noted for what counts events after
    the commit (`LINKED`). Due, a checkpoint is added to the session (flushed with it).

    Run before each flush (`BEFORE_FLUSH`) and before commit: a session with nothing else
    to flush is not flushed at commit; one that is finds its events linked here already."""
    pending = session.info.pop(_PENDING, None)
    if not pending:
        return
    seq, head, last_checkpoint = lock_and_read_head(session)
    rows = []
    for entry in pending:
        seq += 1
        entry.seq = seq
        entry.at = utcnow()
        entry.prev_hash = head
        entry.hash = head = event_hash(entry)
        row = {name: getattr(entry, name) for name in _COLUMNS}
        row["data"] = sorted_data(row["data"])  # stored with its keys sorted: the hashed text
        rows.append(row)
    session.connection().execute(_INSERT_EVENTS, rows)
    session.info.setdefault(LINKED, []).extend(pending)
    checkpointing = _checkpointing(session)
    if checkpointing and checkpointing.signer and seq - last_checkpoint >= checkpointing.every:
        made = make_checkpoint(checkpointing.signer, seq, head, last_checkpoint)
        session.add(made)
        _remember_for_sink(session, checkpointing, made)


def make_checkpoint(signer: Signer, seq: int, hash_: str, prev_seq: int) -> LogCheckpoint:
    at = utcnow()
    payload = checkpoint_payload(
        seq=seq, hash_=hash_, at=at, prev_seq=prev_seq, key_id=signer.key_id
    )
    return LogCheckpoint(
        seq=seq,
        hash=hash_,
        at=at,
        prev_seq=prev_seq,
        key_id=signer.key_id,
        signature=signer.sign(payload),
    )


def checkpoint(session: Session, signer: Signer | None = None) -> LogCheckpoint | None:
    """Sign the current head now (on demand); None if the log is empty.

    Returns the existing checkpoint if the head is already signed.
    """
    session.flush()
    checkpointing = _checkpointing(session)
    if signer is None:
        signer = checkpointing.signer if checkpointing else None
    if signer is None:
        problem = checkpointing.problem if checkpointing else None
        raise NoSignerError(problem or "no signing key: configure() one or run inside the app")
    seq, head, last_checkpoint = lock_and_read_head(session)
    if seq == 0:
        return None
    if last_checkpoint == seq:
        return session.get(LogCheckpoint, seq)
    made = make_checkpoint(signer, seq, head, last_checkpoint)
    session.add(made)
    _remember_for_sink(session, checkpointing, made)
    session.flush()
    return made
