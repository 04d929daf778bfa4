"""Reviewers' decisions on a review queue, one SQLite row per (queue, id), committed at once.

A decision is {id, action, label, reviewer, decided_at} with action `relabel` (label: a
candidate or free text), `keep` (label: the queue's given label) or `drop` (label: None). `skip`
is stored too, but it is not a decision: the item stays unreviewed and comes back after every
item never seen (skipped items return oldest skip first), and it is never exported.

Every write is its own transaction in a WAL-journalled file, so a reviewer's server killed at
any point (SIGKILL included) restarts with every answered decision, and two reviewers (two
threads or two processes on one file) lose nothing: SQLite serialises their writes, and a
second decision on the same item updates its row (last write wins, decided_at updated).

Exported decisions (JSONL or CSV) are a label source for `dssb.review.sources`: `read_export`
validates a file and names the line of the first bad row; `import_rows` stores them back.

  python -m dssb.review export --db DB --out decisions.jsonl   (or .csv)
  python -m dssb.review import --db DB --queue_name NAME decisions.jsonl   (dssb.review.importer)
"""

import csv
import datetime
import io
import json
import os
import sqlite3
import threading
import time
from typing import Iterable, Optional

from dssb import paths

ACTIONS = ('relabel', 'keep', 'drop', 'skip')
DECIDED = ('relabel', 'keep', 'drop')  # skip is not a decision
FIELDS = ('id', 'action', 'label', 'reviewer', 'decided_at')

_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
  queue TEXT NOT NULL,
  id TEXT NOT NULL,
  action TEXT NOT NULL,
  label TEXT,
  reviewer TEXT NOT NULL,
  decided_at TEXT NOT NULL,
  updated REAL NOT NULL,
  PRIMARY KEY (queue, id)
);
CREATE INDEX IF NOT EXISTS decisions_by_time ON decisions (queue, updated);
"""


class DecisionError(ValueError):
  """A decision that breaks the rules (bad action, label missing, ...): the message says why."""


def now_iso(t: Optional[float] = None) -> str:
  """UTC time as 2026-12-04T17:03:11Z, the decided_at format."""
  t = time.time() if t is None else t
  return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


def _parse_time(text: str) -> float:
  return datetime.datetime.fromisoformat(text.replace('Z', '+00:00')).timestamp()


def check(decision: dict) -> dict:
  """The decision with its fields checked (and the label None for drop / skip)."""
  missing = [f for f in FIELDS if f not in decision]
  if missing:
    raise DecisionError(f'missing field {missing[0]!r} (a decision has {", ".join(FIELDS)})')
  extra = sorted(set(decision) - set(FIELDS))
  if extra:
    raise DecisionError(f'unknown field {extra[0]!r} (a decision has {", ".join(FIELDS)})')
  out = dict(decision)
  if not isinstance(out['id'], str) or not out['id']:
    raise DecisionError(f'id must be a non-empty string, got {out["id"]!r}')
  if out['action'] not in ACTIONS:
    raise DecisionError(f'action {out["action"]!r} is not one of {", ".join(ACTIONS)}')
  label = out['label']
  if out['action'] in ('relabel', 'keep'):
    if not isinstance(label, str) or not label.strip():
      raise DecisionError(f'action {out["action"]!r} needs a label, got {label!r}')
    out['label'] = label.strip()
  elif label not in (None, ''):
    raise DecisionError(f'action {out["action"]!r} takes no label, got {label!r}')
  else:
    out['label'] = None
  if not isinstance(out['reviewer'], str) or not out['reviewer'].strip():
    raise DecisionError(f'reviewer must be a non-empty string, got {out["reviewer"]!r}')
  try:
    _parse_time(out['decided_at'])
  except (TypeError, ValueError, AttributeError) as e:
    raise DecisionError(f'decided_at {out["decided_at"]!r} is not an ISO 8601 time '
                        '(2026-12-04T17:03:11Z)') from e
  return out


class Store:
  """The decisions file. Thread-safe (one connection behind a lock); processes share the file
  through SQLite's own locking (a 60 s busy timeout)."""

  def __init__(self, path: str):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    self.path = path
    self._lock = threading.Lock()
    try:
      self._db = sqlite3.connect(path, timeout=60, check_same_thread=False,
                                 isolation_level=None)  # autocommit: each write commits at once
      self._db.execute('PRAGMA journal_mode=WAL')
      self._db.execute('PRAGMA synchronous=NORMAL')  # WAL + NORMAL: safe against process kills
      self._db.executescript(_SCHEMA)
    except sqlite3.DatabaseError as e:
      raise ValueError(f'{path}: not a usable decisions file ({e}); move it away or pass '
                       'another --db') from e
    self._queue = None

  def close(self):
    with self._lock:
      self._db.close()

  # -- the queue being reviewed (a temporary table of this connection: id -> rank) --------------

  def set_queue(self, name: str, ids_in_rank_order: Iterable[str]) -> None:
    """Names the queue this store serves and its item order, so that `next_id` and `progress`
    are answered by SQLite's indexes rather than a Python scan per request."""
    with self._lock:
      self._db.execute('DROP TABLE IF EXISTS temp.items')
      self._db.execute('CREATE TEMP TABLE items (id TEXT PRIMARY KEY, pos INTEGER NOT NULL)')
      self._db.execute('CREATE INDEX temp.items_by_pos ON items (pos)')
      self._db.execute('BEGIN')
      self._db.executemany('INSERT INTO temp.items VALUES (?, ?)',
                           ((i, pos) for pos, i in enumerate(ids_in_rank_order)))
      self._db.execute('COMMIT')
    self._queue = name
    self._frontier = 0  # every item before this position has a row (rows are never deleted)

  def _need_queue(self) -> str:
    if self._queue is None:
      raise RuntimeError('Store.set_queue(...) first')
    return self._queue

  def next_id(self) -> Optional[str]:
    """The first item by rank with no row; else the oldest skipped one; else None (all done).

    The search starts at the first position that had no row last time: rows are only ever added
    or updated, so the items before it all still have one (another process's writes included).
    """
    queue = self._need_queue()
    with self._lock:
      row = self._db.execute(
          'SELECT i.id, i.pos FROM temp.items i WHERE i.pos >= ? AND NOT EXISTS (SELECT 1 FROM '
          'decisions d WHERE d.queue = ? AND d.id = i.id) ORDER BY i.pos LIMIT 1',
          (self._frontier, queue)).fetchone()
      if row is not None:
        self._frontier = row[1]
      else:
        self._frontier = self._db.execute('SELECT COUNT(*) FROM temp.items').fetchone()[0]
        row = self._db.execute(
            'SELECT d.id FROM decisions d JOIN temp.items i ON i.id = d.id WHERE d.queue = ? '
            "AND d.action = 'skip' ORDER BY d.updated, i.pos LIMIT 1", (queue,)).fetchone()
    return row[0] if row else None

  def progress(self) -> tuple[int, int]:
    """(items of the queue with a decision, items in the queue); skips do not count."""
    queue = self._need_queue()
    with self._lock:
      done = self._db.execute(
          'SELECT COUNT(*) FROM decisions d JOIN temp.items i ON i.id = d.id '
          "WHERE d.queue = ? AND d.action != 'skip'", (queue,)).fetchone()[0]
      total = self._db.execute('SELECT COUNT(*) FROM temp.items').fetchone()[0]
    return done, total

  def recent(self, limit: int = 5) -> list[dict]:
    """The latest decisions on this queue (skips excluded), newest first."""
    queue = self._need_queue()
    with self._lock:
      rows = self._db.execute(
          'SELECT id, action, label, reviewer, decided_at FROM decisions '
          "WHERE queue = ? AND action != 'skip' ORDER BY updated DESC LIMIT ?",
          (queue, limit)).fetchall()
    return [dict(zip(FIELDS, r)) for r in rows]

  # -- decisions ------------------------------------------------------------------------------

  def get(self, item_id: str, queue: Optional[str] = None) -> Optional[dict]:
    queue = queue or self._need_queue()
    with self._lock:
      row = self._db.execute('SELECT id, action, label, reviewer, decided_at FROM decisions '
                             'WHERE queue = ? AND id = ?', (queue, item_id)).fetchone()
    return dict(zip(FIELDS, row)) if row else None

  def decide(self, item_id: str, action: str, label: Optional[str], reviewer: str,
             queue: Optional[str] = None, when: Optional[float] = None) -> dict:
    """Stores (commits) one decision, replacing an earlier one on the same item; returns it.

    A skip of an item that already has a decision is refused: skip means "not now", and it must
    not erase a decision (relabel, keep or drop it again to change one's mind)."""
    queue = queue or self._need_queue()
    when = time.time() if when is None else when
    decision = check({'id': item_id, 'action': action, 'label': label, 'reviewer': reviewer,
                      'decided_at': now_iso(when)})
    with self._lock:
      self._db.execute('BEGIN IMMEDIATE')
      try:
        if action == 'skip':
          old = self._db.execute('SELECT action FROM decisions WHERE queue = ? AND id = ?',
                                 (queue, item_id)).fetchone()
          if old is not None and old[0] != 'skip':
            raise DecisionError(f'{item_id!r} is already decided ({old[0]}); skip does not undo '
                                'a decision: relabel, keep or drop it to change it')
        self._db.execute(
            'INSERT INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (queue, id) DO '
            'UPDATE SET action = excluded.action, label = excluded.label, '
            'reviewer = excluded.reviewer, decided_at = excluded.decided_at, '
            'updated = excluded.updated',
            (queue, item_id, decision['action'], decision['label'], decision['reviewer'],
             decision['decided_at'], when))
        self._db.execute('COMMIT')
      except BaseException:
        self._db.execute('ROLLBACK')
        raise
    return decision

  def queues(self) -> list[str]:
    with self._lock:
      return [r[0] for r in self._db.execute('SELECT DISTINCT queue FROM decisions ORDER BY 1')]

  def rows(self, queue: Optional[str] = None, include_skips: bool = False) -> list[dict]:
    """Decisions of one queue (or all), oldest first, as exported."""
    where, args = [], []
    if queue is not None:
      where.append('queue = ?')
      args.append(queue)
    if not include_skips:
      where.append("action != 'skip'")
    sql = ('SELECT id, action, label, reviewer, decided_at FROM decisions' +
           (' WHERE ' + ' AND '.join(where) if where else '') + ' ORDER BY updated, id')
    with self._lock:
      return [dict(zip(FIELDS, r)) for r in self._db.execute(sql, args)]

  def import_rows(self, rows: Iterable[dict], queue: str) -> tuple[int, int]:
    """Stores exported decisions into `queue`; an item's newer decision (by decided_at) wins.
    Returns (rows written, rows older than the stored decision and left out)."""
    written = older = 0
    for row in rows:
      row = check(row)
      when = _parse_time(row['decided_at'])
      with self._lock:
        self._db.execute('BEGIN IMMEDIATE')
        old = self._db.execute('SELECT updated FROM decisions WHERE queue = ? AND id = ?',
                               (queue, row['id'])).fetchone()
        if old is not None and old[0] > when + 1:  # decided_at has whole seconds
          self._db.execute('ROLLBACK')
          older += 1
          continue
        self._db.execute(
            'INSERT OR REPLACE INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?)',
            (queue, row['id'], row['action'], row['label'], row['reviewer'], row['decided_at'],
             when))
        self._db.execute('COMMIT')
        written += 1
    return written, older


# -- export files -------------------------------------------------------------------------------

def _is_csv(path: str) -> bool:
  return str(path).lower().endswith('.csv')


def write_export(rows: list[dict], path: str) -> None:
  """JSONL (one decision a line) or, for a .csv path, CSV with a header (drop: empty label).
  Written through the project's path layer (local or gs://)."""
  if _is_csv(path):
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator='\n')
    writer.writeheader()
    for row in rows:
      writer.writerow({k: ('' if row[k] is None else row[k]) for k in FIELDS})
    text = buf.getvalue()
  else:
    text = ''.join(json.dumps({k: row[k] for k in FIELDS}, ensure_ascii=False) + '\n'
                   for row in rows)
  paths.path(path).write_text(text, encoding='utf-8')


def read_export(path: str) -> list[dict]:
  """Decisions from an exported JSONL or CSV file, validated.

  Errors (ValueError) name the file and line: bad JSON, a missing or unknown field, an action
  other than relabel / keep / drop, a relabel or keep with no label, a bad time, or the same
  (id, reviewer) twice. Skips are not decisions and are refused here.
  """
  text = paths.path(path).read_text(encoding='utf-8')
  out, seen = [], {}
  if _is_csv(path):
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or set(reader.fieldnames) != set(FIELDS):
      raise ValueError(f'{path} line 1: the CSV header must be {",".join(FIELDS)}, got '
                       f'{",".join(reader.fieldnames or [])!r}')
    numbered = ((reader.line_num, row) for row in reader)
  else:
    numbered = _json_lines(path, text)
  for line, row in numbered:
    try:
      if row.get('action') == 'skip':
        raise DecisionError('action skip is not a decision and is never exported')
      row = check(row)
    except DecisionError as e:
      raise ValueError(f'{path} line {line}: {e}') from None
    key = (row['id'], row['reviewer'])
    if key in seen:
      raise ValueError(f'{path} line {line}: {row["id"]!r} by {row["reviewer"]!r} again '
                       f'(first on line {seen[key]})')
    seen[key] = line
    out.append(row)
  return out


def _json_lines(path, text):
  for line, raw in enumerate(text.splitlines(), 1):
    if not raw.strip():
      continue
    try:
      row = json.loads(raw)
    except json.JSONDecodeError as e:
      raise ValueError(f'{path} line {line}: not valid JSON ({e.msg})') from None
    if not isinstance(row, dict):
      raise ValueError(f'{path} line {line}: a decision must be a JSON object, got '
                       f'{type(row).__name__}')
    yield line, row


# -- subcommands: export, import ------------------------------------------------------------------

def add_arguments(parser):
  parser.add_argument('--db', required=True, help='the decisions file (SQLite) of `serve`')
  parser.add_argument('--queue_name', help='the queue whose decisions to export (default: the '
                      'only one in the file)')
  parser.add_argument('--out', required=True,
                      help='decisions.jsonl or decisions.csv (local or gs://)')


def run(args) -> int:
  if not os.path.exists(args.db):
    raise SystemExit(f'dssb.review export: {args.db}: no such decisions file')
  store = Store(args.db)
  queues = store.queues()
  queue = args.queue_name
  if queue is None and len(queues) > 1:
    raise SystemExit(f'dssb.review export: {args.db} holds {len(queues)} queues '
                     f'({", ".join(queues)}); choose one with --queue_name')
  if queue is not None and queue not in queues:
    raise SystemExit(f'dssb.review export: {args.db} has no queue {queue!r} (it has: '
                     f'{", ".join(queues) or "none"})')
  rows = store.rows(queue)
  skipped = len(store.rows(queue, include_skips=True)) - len(rows)
  write_export(rows, args.out)
  counts = {a: sum(r['action'] == a for r in rows) for a in DECIDED}
  summary = ', '.join(f'{k} {v}' for k, v in counts.items())
  print(f'dssb.review export: {len(rows)} decisions ({summary}; {skipped} skipped items not '
        f'exported) -> {args.out}')
  return 0
