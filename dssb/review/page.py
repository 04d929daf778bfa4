"""The review page: a person works through a review queue, one flagged example at a time.

  python -m dssb.review serve --queue QUEUE.jsonl [--db DB] [--reviewer NAME]
  python -m dssb.review serve --queue QUEUE.jsonl --host 0.0.0.0 --token_env REVIEW_TOKEN

Server-rendered HTML (FastAPI + Jinja2, plain forms, a few lines of inline JavaScript for the
keyboard): no build step, nothing fetched from the network. The page shows the next unreviewed
example by rank: its input, the label training would use now and the teacher's rationale, each
source's vote, the student's out-of-fold distribution, and buttons to relabel (1-9 pick a
candidate, or type a label), keep (k), drop (d) or skip (s). Each decision is committed to
SQLite (dssb.review.decisions) before the answer goes back, so a server killed at any point
restarts where the reviewer left. GET /item/ID shows (and re-decides) any item.

The queue file (JSONL, one flagged example a line, the format of `dssb.review.flag`) is read
once at start; a bad line stops the start with an error naming the file and line. Binds
127.0.0.1 unless --host says otherwise; any other host needs a token (--token or --token_env),
which a browser passes once as ?token=... (kept in an HttpOnly cookie) and a script as
`Authorization: Bearer ...`. A POST from another site's page (its Origin is not this server)
is refused. Malformed requests get a 4xx whose body says why.
"""

import asyncio
import getpass
import hmac
import ipaddress
import json
import math
import os
import sys
import urllib.parse
from typing import Optional

import jinja2

from dssb import listen
from dssb import paths
from dssb.review import decisions

TEMPLATES = os.path.join(os.path.dirname(__file__), 'templates')
COOKIE = 'dssb_review_token'
MAX_FORM_BYTES = 64 << 10
MAX_LABEL_CHARS = 200
SHORTCUT_KEYS = '123456789'


class QueueError(ValueError):
  """A queue file that cannot be reviewed; the message names the file and line."""


class RequestError(Exception):
  """A 4xx answer with its reason."""

  def __init__(self, status: int, reason: str):
    super().__init__(reason)
    self.status, self.reason = status, reason


# -- the queue ----------------------------------------------------------------------------------

def _kind(value, kinds, what, where):
  if isinstance(value, bool) or not isinstance(value, kinds):
    raise QueueError(f'{where}: {what} is {type(value).__name__} ({value!r:.60}), expected '
                     + ' or '.join(k.__name__ for k in kinds))
  return value


def _check_item(item, where):
  if not isinstance(item, dict):
    raise QueueError(f'{where}: a queue item must be a JSON object, got {type(item).__name__}')
  for name in ('rank', 'id', 'input', 'candidates'):
    if name not in item:
      raise QueueError(f'{where}: missing field {name!r}')
  _kind(item['rank'], (int,), 'rank', where)
  if not _kind(item['id'], (str,), 'id', where):
    raise QueueError(f'{where}: id is empty')
  _kind(item['input'], (str,), 'input', where)
  given = item.setdefault('given_label', None)
  if given is not None:
    _kind(given, (str,), 'given_label', where)
  if item.setdefault('rationale', None) is not None:
    _kind(item['rationale'], (str,), 'rationale', where)
  candidates = _kind(item['candidates'], (list,), 'candidates', where)
  for c in candidates:
    _kind(c, (str,), 'a candidate', where)
  for source, vote in _kind(item.setdefault('votes', {}), (dict,), 'votes', where).items():
    if vote is not None:
      _kind(vote, (str,), f'the vote of {source!r}', where)
  probs = _kind(item.setdefault('student_probs', {}) or {}, (dict,), 'student_probs', where)
  for label, p in probs.items():
    if not math.isfinite(_kind(p, (int, float), f'student_probs[{label!r}]', where)) or p < 0:
      raise QueueError(f'{where}: student_probs[{label!r}] = {p} is not a probability')
  if item.setdefault('quality', None) is not None:
    _kind(item['quality'], (int, float), 'quality', where)
  return item


def read_queue(path: str) -> list[dict]:
  """The queue's items in rank order, each checked (errors name the file and line)."""
  try:
    text = paths.path(path).read_text(encoding='utf-8')
  except FileNotFoundError as e:
    raise QueueError(f'{path}: no such queue file') from e
  except UnicodeDecodeError as e:
    raise QueueError(f'{path}: not UTF-8 text ({e})') from e
  items, lines_of_id, lines_of_rank = [], {}, {}
  for line, raw in enumerate(text.splitlines(), 1):
    if not raw.strip():
      continue
    where = f'{path} line {line}'
    try:
      item = json.loads(raw)
    except json.JSONDecodeError as e:
      raise QueueError(f'{where}: not valid JSON ({e.msg}, column {e.colno})') from None
    item = _check_item(item, where)
    if item['id'] in lines_of_id:
      raise QueueError(f'{where}: id {item["id"]!r} again (first on line '
                       f'{lines_of_id[item["id"]]}); ids must be unique in a queue')
    if item['rank'] in lines_of_rank:
      raise QueueError(f'{where}: rank {item["rank"]} again (first on line '
                       f'{lines_of_rank[item["rank"]]})')
    lines_of_id[item['id']], lines_of_rank[item['rank']] = line, line
    items.append(item)
  if not items:
    raise QueueError(f'{path}: the queue is empty')
  return sorted(items, key=lambda item: item['rank'])


def queue_name(path: str) -> str:
  """The name decisions are filed under: the queue file's name without its extension."""
  name = os.path.basename(str(path).rstrip('/'))
  return name[:-len('.jsonl')] if name.endswith('.jsonl') else os.path.splitext(name)[0]


# -- the page -----------------------------------------------------------------------------------

def _environment():
  return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                            autoescape=jinja2.select_autoescape(['html']),
                            undefined=jinja2.StrictUndefined, trim_blocks=True,
                            lstrip_blocks=True)


def view(item: dict) -> dict:
  """What the template shows of an item (never `gold`): numbered candidates (1-9 are keys),
  votes, and the student's distribution sorted high to low."""
  probs = item['student_probs']
  top = max(probs, key=probs.get) if probs else None
  candidates = [{'key': SHORTCUT_KEYS[i] if i < len(SHORTCUT_KEYS) else None, 'label': c,
                 'given': c == item['given_label'], 'top': c == top}
                for i, c in enumerate(item['candidates'])]
  dist = sorted(probs.items(), key=lambda kv: (-kv[1], kv[0]))
  return {'id': item['id'], 'rank': item['rank'], 'input': item['input'],
          'given_label': item['given_label'], 'rationale': item['rationale'],
          'quality': item['quality'], 'candidates': candidates,
          'votes': sorted(item['votes'].items()),
          'agree': sum(v == item['given_label'] for v in item['votes'].values()),
          'voting': sum(v is not None for v in item['votes'].values()),
          'dist': [{'label': k, 'p': p, 'given': k == item['given_label'], 'top': k == top}
                   for k, p in dist]}


def parse_form(body: bytes, content_type: str) -> dict:
  """One value per field of an urlencoded form (a repeated or unknown field is an error)."""
  if content_type.split(';')[0].strip().lower() != 'application/x-www-form-urlencoded':
    raise RequestError(415, f'a decision is an HTML form post (application/x-www-form-'
                       f'urlencoded), got content type {content_type or "none"!r}')
  try:
    pairs = urllib.parse.parse_qsl(body.decode('utf-8'), keep_blank_values=True,
                                   strict_parsing=bool(body), max_num_fields=10)
  except (UnicodeDecodeError, ValueError) as e:
    raise RequestError(400, f'the form is not valid urlencoded UTF-8 ({e})') from e
  form = {}
  for name, value in pairs:
    if name not in ('id', 'action', 'label'):
      raise RequestError(400, f'unknown form field {name!r} (fields: id, action, label)')
    if name in form:
      raise RequestError(400, f'form field {name!r} given twice')
    form[name] = value
  return form


def create_app(items: list[dict], store: decisions.Store, *, reviewer: str,
               token: Optional[str] = None, title: str = 'review'):
  """The FastAPI app over a read queue and a decisions store (set_queue already called)."""
  import fastapi  # pylint: disable=g-import-not-at-top
  from fastapi import responses  # pylint: disable=g-import-not-at-top

  by_id = {item['id']: item for item in items}
  env = _environment()
  page, error_page = env.get_template('item.html'), env.get_template('error.html')
  app = fastapi.FastAPI(title='dssb.review', docs_url=None, redoc_url=None, openapi_url=None)

  def error(status, reason):
    return responses.HTMLResponse(error_page.render(status=status, reason=reason, title=title),
                                  status)

  def authorised(request) -> bool:
    if token is None:
      return True
    given = request.cookies.get(COOKIE, '')
    header = request.headers.get('authorization', '')
    if header.startswith('Bearer '):
      given = header[len('Bearer '):]
    return hmac.compare_digest(given.encode(), token.encode())

  @app.middleware('http')
  async def guard(request: fastapi.Request, call_next):
    if token is not None and request.method == 'GET' and 'token' in request.query_params:
      if not hmac.compare_digest(request.query_params['token'].encode(), token.encode()):
        return error(401, 'wrong token')
      response = responses.RedirectResponse(request.url.path, 303)
      response.set_cookie(COOKIE, token, httponly=True, samesite='strict')
      return response
    if not authorised(request):
      return error(401, 'this review page needs its token: open it once as /?token=... or '
                   'send Authorization: Bearer ...')
    origin = request.headers.get('origin')
    if request.method == 'POST' and origin and origin != 'null':
      if urllib.parse.urlsplit(origin).netloc != request.headers.get('host'):
        return error(403, f'a POST from another site ({origin}) is refused')
    return await call_next(request)

  def render(item, status=200):
    done, total = store.progress()
    decided = store.get(item['id'])
    body = page.render(item=view(item), decided=decided if decided and
                       decided['action'] != 'skip' else None,
                       skipped=bool(decided and decided['action'] == 'skip'),
                       done=done, total=total, reviewer=reviewer, recent=store.recent(5),
                       title=title, finished=False)
    return responses.HTMLResponse(body, status)

  @app.get('/')
  def next_item():
    item_id = store.next_id()
    if item_id is None:
      done, total = store.progress()
      return responses.HTMLResponse(page.render(
          item=None, decided=None, skipped=False, done=done, total=total, reviewer=reviewer,
          recent=store.recent(5), title=title, finished=True))
    return render(by_id[item_id])

  @app.get('/item/{item_id:path}')
  def one_item(item_id: str):
    if item_id not in by_id:
      return error(404, f'no item {item_id!r} in this queue')
    return render(by_id[item_id])

  @app.post('/decide')
  async def decide(request: fastapi.Request):
    try:
      length = request.headers.get('content-length', '0')
      if not length.isdigit() or int(length) > MAX_FORM_BYTES:
        raise RequestError(413, f'a decision form is at most {MAX_FORM_BYTES} bytes')
      form = parse_form(await request.body(), request.headers.get('content-type', ''))
      decision = _decision(form, by_id)
    except RequestError as e:
      return error(e.status, e.reason)
    try:
      store.decide(decision['id'], decision['action'], decision['label'], reviewer)
    except decisions.DecisionError as e:
      return error(409 if 'already decided' in str(e) else 400, str(e))
    return responses.RedirectResponse('/', 303)

  @app.get('/health')
  def health():
    done, total = store.progress()
    return {'status': 'ok', 'reviewed': done, 'items': total, 'next': store.next_id()}

  @app.exception_handler(404)
  async def not_found(request, exc):  # pylint: disable=unused-argument
    return error(404, f'no page {request.method} {request.url.path}')

  @app.exception_handler(405)
  async def not_allowed(request, exc):  # pylint: disable=unused-argument
    return error(405, f'method {request.method} is not allowed on {request.url.path}')

  return app


def _decision(form: dict, by_id: dict) -> dict:
  """The decision a form asks for, or the 4xx that says what is wrong with it."""
  for name in ('id', 'action'):
    if not form.get(name):
      raise RequestError(400, f'form field {name!r} is missing')
  item = by_id.get(form['id'])
  if item is None:
    raise RequestError(404, f'no item {form["id"]!r} in this queue')
  action, label = form['action'], form.get('label', '').strip()
  if action not in decisions.ACTIONS:
    raise RequestError(400, f'unknown action {action!r} (one of '
                       f'{", ".join(decisions.ACTIONS)})')
  if action == 'relabel':
    if not label:
      raise RequestError(400, 'relabel needs a label (pick a candidate or type one)')
    if len(label) > MAX_LABEL_CHARS:
      raise RequestError(400, f'a label is at most {MAX_LABEL_CHARS} characters')
  elif label:
    raise RequestError(400, f'{action} takes no label (got {label!r}); relabel does')
  if action == 'keep':
    if item['given_label'] is None:
      raise RequestError(400, f'{form["id"]!r} has no given label to keep; relabel or drop it')
    label = item['given_label']
  return {'id': form['id'], 'action': action, 'label': label or None}


# -- python -m dssb.review serve ---------------------------------------------------------------

def is_loopback(host: str) -> bool:
  if host == 'localhost':
    return True
  try:
    return ipaddress.ip_address(host).is_loopback
  except ValueError:
    return False


def add_arguments(parser):
  parser.add_argument('--queue', required=True, help='the review queue (JSONL, rank order)')
  parser.add_argument('--db', help='decisions file (SQLite; default: next to a local queue, '
                      'QUEUE.decisions.sqlite)')
  parser.add_argument('--queue_name', help='the name decisions are filed under (default: the '
                      'queue file\'s name without extension)')
  parser.add_argument('--reviewer', default=None, help='name written with each decision '
                      '(default: the login name)')
  parser.add_argument('--host', default='127.0.0.1',
                      help='127.0.0.1 by default; any other host needs a token')
  parser.add_argument('--port', type=int, default=8020,
                      help='default 8020; 0: any free port (printed)')
  parser.add_argument('--token', help='required token (prefer --token_env: argv is visible to '
                      'other users of the machine)')
  parser.add_argument('--token_env', help='require the token held by this environment variable')


def _token(args) -> Optional[str]:
  token = args.token
  if args.token_env:
    token = os.environ.get(args.token_env)
    if not token:
      raise SystemExit(f'dssb.review serve: --token_env {args.token_env}: that environment '
                       'variable is not set')
  if token is not None and len(token) < 16:
    raise SystemExit('dssb.review serve: a token must be at least 16 characters')
  if token is None and not is_loopback(args.host):
    raise SystemExit(f'dssb.review serve: --host {args.host} is reachable from other machines; '
                     'give a token (--token_env NAME or --token T), or bind 127.0.0.1')
  return token


def default_db(queue: str) -> str:
  if paths.is_remote(queue):
    raise SystemExit(f'dssb.review serve: {queue} is remote; SQLite needs a local --db')
  stem = queue[:-len('.jsonl')] if queue.endswith('.jsonl') else os.path.splitext(queue)[0]
  return stem + '.decisions.sqlite'


def run(args) -> int:
  token = _token(args)  # before anything else: refuse to start unprotected
  try:
    items = read_queue(args.queue)
  except QueueError as e:
    raise SystemExit(f'dssb.review serve: {e}') from None
  name = args.queue_name or queue_name(args.queue)
  db = args.db or default_db(args.queue)
  store = decisions.Store(db)
  store.set_queue(name, [item['id'] for item in items])
  try:
    reviewer = args.reviewer or getpass.getuser()
  except (KeyError, OSError):  # a container user with no passwd entry and no $USER
    raise SystemExit('dssb.review serve: no login name here; pass --reviewer NAME') from None
  app = create_app(items, store, reviewer=reviewer, token=token, title=name)
  import uvicorn  # pylint: disable=g-import-not-at-top
  sock = listen.listening_socket(args.host, args.port)
  host, port = sock.getsockname()[:2]
  done, total = store.progress()
  print(f'dssb.review: {total} items from {args.queue} ({done} reviewed), decisions in {db} '
        f'as {reviewer!r}; open http://{host}:{port}/' +
        ('?token=... (your token) once' if token else ''), flush=True)
  config = uvicorn.Config(app, log_level='warning', access_log=False, timeout_keep_alive=30)
  try:
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))
  finally:
    done, total = store.progress()
    store.close()
    print(f'dssb.review: stopped; {done} of {total} reviewed', file=sys.stderr)
  return 0
