"""The annotation cache: one SQLite row per (teacher, prompt, input, sampling parameters, seed).

Every completion is committed as soon as it arrives (WAL journal), so a run killed at any point,
SIGKILL included, restarts with all answered requests in hand and sends only the others; a
rerun of a finished annotation sends nothing. Rows keep the request body as sent (never the API
key, which lives only in the client's headers) and the raw completion with its log-probabilities.
"""

import hashlib
import json
import os
import sqlite3
import time
from typing import Iterable, Optional

_SCHEMA = """
CREATE TABLE IF NOT EXISTS completions (
  key TEXT PRIMARY KEY,
  teacher TEXT NOT NULL,
  prompt TEXT NOT NULL,
  input_sha256 TEXT NOT NULL,
  seed INTEGER NOT NULL,
  request TEXT NOT NULL,
  response TEXT NOT NULL,
  created REAL NOT NULL
)
"""


def canonical(obj) -> str:
  return json.dumps(obj, sort_keys=True, separators=(',', ':'), ensure_ascii=False)


def sha256(text: str) -> str:
  return hashlib.sha256(text.encode()).hexdigest()


def make_key(teacher: str, backend: str, prompt: str, text: str, sampling: dict,
             seed: int) -> str:
  """The cache key: what determines a completion (not where the server runs)."""
  return sha256(canonical({'teacher': teacher, 'backend': backend, 'prompt': prompt,
                           'input': text, 'sampling': sampling, 'seed': seed}))


class Cache:
  """get_many / put over one SQLite file (one writer: the annotator's event loop)."""

  def __init__(self, path: str):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    self.path = path
    try:
      self._db = sqlite3.connect(path, timeout=60)
      self._db.execute('PRAGMA journal_mode=WAL')
      self._db.execute('PRAGMA synchronous=NORMAL')  # WAL + NORMAL: safe against process kills
      self._db.execute(_SCHEMA)
      self._db.commit()
    except sqlite3.DatabaseError as e:
      raise ValueError(f'{path}: not a usable annotation cache ({e}); move it away or pass '
                       'another --cache') from e

  def get_many(self, keys: Iterable[str]) -> dict:
    """{key: {'request', 'response', 'created'}} for the keys present."""
    keys = list(dict.fromkeys(keys))
    found = {}
    for start in range(0, len(keys), 500):
      chunk = keys[start:start + 500]
      rows = self._db.execute(
          'SELECT key, request, response, created FROM completions WHERE key IN '
          f'({",".join("?" * len(chunk))})', chunk)
      for key, request, response, created in rows:
        found[key] = {'request': json.loads(request), 'response': json.loads(response),
                      'created': created}
    return found

  def put(self, key: str, *, teacher: str, prompt: str, text: str, seed: int, request: dict,
          response: dict, created: Optional[float] = None) -> float:
    """Stores and commits one completion; returns its time (an existing key is kept)."""
    created = time.time() if created is None else created
    self._db.execute(
        'INSERT OR IGNORE INTO completions VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
        (key, teacher, prompt, sha256(text), seed, canonical(request), canonical(response),
         created))
    self._db.commit()
    return created

  def count(self) -> int:
    return self._db.execute('SELECT COUNT(*) FROM completions').fetchone()[0]

  def close(self):
    self._db.close()
