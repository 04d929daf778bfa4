"""dssb.review.page: the review page in a real browser (Debian's headless chromium driven by
Playwright) against the server as a real process killed with SIGKILL and restarted; and the
HTTP rules (token, 4xx reasons, queue errors) against a real server on 127.0.0.1."""

import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest

from dssb.review import __main__ as cli
from dssb.review import decisions
from dssb.review import page

CHROMIUM = '/usr/bin/chromium'
CANDIDATES = ['bank', 'library', 'department store', 'mall', 'new york']


def write_queue(path, n=6):
  """A queue in the interface format (dssb.review.flag's): rank order, gold never shown."""
  items = []
  for i in range(n):
    probs = {c: 0.05 for c in CANDIDATES}
    probs[CANDIDATES[(i + 1) % 5]] = 0.8
    items.append({
        'rank': i + 1, 'id': f'cqa/train/{100 + i}', 'dataset': 'cqa', 'split': 'train',
        'index': 100 + i,
        'input': f'Where is money number {i} kept?\nAnswer Choices:\n' +
                 '\n'.join(f'({l}) {c}' for l, c in zip('abcde', CANDIDATES)),
        'given_label': CANDIDATES[i % 5], 'rationale': f'Rationale {i} <script>x()</script>',
        'candidates': CANDIDATES,
        'votes': {'palm': CANDIDATES[i % 5], 'palm_sample_1': CANDIDATES[(i + 1) % 5],
                  'lf_bank': None},
        'student_probs': probs, 'quality': 0.05, 'gold': 'GOLD-NEVER-SHOWN'})
  path.write_text(''.join(json.dumps(x) + '\n' for x in items))
  return items


def free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def request(port, method, path, body=None, headers=None):
  conn = http.client.HTTPConnection('127.0.0.1', port, timeout=30)
  headers = dict(headers or {})
  if isinstance(body, dict):
    body = urllib.parse.urlencode(body)
    headers.setdefault('Content-Type', 'application/x-www-form-urlencoded')
  conn.request(method, path, body=body, headers=headers)
  response = conn.getresponse()
  text = response.read().decode()
  conn.close()
  return response.status, text, response


class ServerProcess:
  """python -m dssb.review serve as a real process; ready once it prints its address."""

  def __init__(self, *args):
    self.proc = subprocess.Popen([sys.executable, '-m', 'dssb.review', 'serve', *args],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = self.proc.stdout.readline()
    if 'open http://' not in line:
      self.proc.kill()
      raise AssertionError(f'the server did not start: {line}{self.proc.stdout.read()}')

  def kill(self):
    self.proc.send_signal(signal.SIGKILL)
    self.proc.wait(30)
    self.proc.stdout.close()


def _reason(text):
  return text.split('<p id="reason">')[1].split('</p>')[0]


@pytest.mark.skipif(not os.path.exists(CHROMIUM),
                    reason=f'no {CHROMIUM} (apt-get install chromium; experiments/setup.sh '
                    'installs it as root)')
def test_keyboard_decisions_survive_sigkill_in_a_real_browser(tmp_path):
  from playwright.sync_api import sync_playwright  # pylint: disable=g-import-not-at-top
  queue, db, port = tmp_path / 'queue.jsonl', str(tmp_path / 'decisions.sqlite'), free_port()
  items = write_queue(queue)
  args = ('--queue', str(queue), '--db', db, '--port', str(port), '--reviewer', 'ana')
  server = ServerProcess(*args)
  url = f'http://127.0.0.1:{port}/'
  try:
    with sync_playwright() as p:
      browser = p.chromium.launch(executable_path=CHROMIUM, args=['--no-sandbox'])
      tab = browser.new_page()
      tab.goto(url)
      shown = lambda: tab.get_attribute('#item', 'data-item-id')
      assert shown() == items[0]['id']
      assert '0 of 6 reviewed' in tab.inner_text('#progress')
      shortcuts = tab.inner_text('#shortcuts')
      assert all(k in shortcuts for k in ('pick a candidate', 'keep', 'drop', 'skip'))
      assert 'GOLD-NEVER-SHOWN' not in tab.content()
      assert '<script>x()</script>' in tab.inner_text('.rationale')  # shown as text, escaped
      for key in ('3', 'k', 'd'):  # relabel to candidate 3, keep, drop
        with tab.expect_navigation():
          tab.keyboard.press(key)
      assert shown() == items[3]['id'] and '3 of 6 reviewed' in tab.inner_text('#progress')

      server.kill()
      with pytest.raises(Exception):  # the server is gone
        tab.goto(url, timeout=3000)
      server = ServerProcess(*args)
      tab.goto(url)
      assert shown() == items[3]['id']  # resumes where the reviewer left
      assert '3 of 6 reviewed' in tab.inner_text('#progress')
      assert items[0]['id'] in tab.inner_text('.recent')
      tab.keyboard.press('t')  # a typed label, by keyboard only
      tab.keyboard.type('piggy bank')
      with tab.expect_navigation():
        tab.keyboard.press('Enter')
      assert shown() == items[4]['id'] and '4 of 6 reviewed' in tab.inner_text('#progress')
      browser.close()
  finally:
    server.kill()
  rows = sqlite3.connect(db).execute(
      'SELECT id, action, label, reviewer FROM decisions ORDER BY updated').fetchall()
  assert rows == [(items[0]['id'], 'relabel', CANDIDATES[2], 'ana'),
                  (items[1]['id'], 'keep', items[1]['given_label'], 'ana'),
                  (items[2]['id'], 'drop', None, 'ana'),
                  (items[3]['id'], 'relabel', 'piggy bank', 'ana')]
  # a malformed POST to a real server process gets a 4xx with the reason
  server = ServerProcess(*args)
  try:
    status, text, _ = request(port, 'POST', '/decide', {'id': items[4]['id'],
                                                         'action': 'relabel'})
    assert status == 400 and 'relabel needs a label' in _reason(text)
  finally:
    server.kill()


# -- the HTTP rules, against a real uvicorn server on 127.0.0.1 in this process -----------------

class ThreadServer:
  """page.create_app served by uvicorn on a thread (a real socket on 127.0.0.1)."""

  def __init__(self, queue_path, db, token=None):
    import uvicorn  # pylint: disable=g-import-not-at-top
    self.items = page.read_queue(str(queue_path))
    self.store = decisions.Store(db)
    self.store.set_queue('queue', [i['id'] for i in self.items])
    app = page.create_app(self.items, self.store, reviewer='bo', token=token)
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    sock.listen(16)
    self.port = sock.getsockname()[1]
    self.server = uvicorn.Server(uvicorn.Config(app, log_level='warning'))
    self.thread = threading.Thread(target=self.server.run, kwargs={'sockets': [sock]},
                                   daemon=True)
    self.thread.start()
    for _ in range(200):
      if self.server.started:
        break
      time.sleep(0.02)

  def stop(self):
    self.server.should_exit = True
    self.thread.join(10)
    self.store.close()


@pytest.fixture
def served(tmp_path):
  write_queue(tmp_path / 'queue.jsonl')
  server = ThreadServer(tmp_path / 'queue.jsonl', str(tmp_path / 'd.sqlite'))
  yield server
  server.stop()


def test_decisions_skip_and_change_of_mind_over_http(served):
  ids = [i['id'] for i in served.items]
  assert request(served.port, 'POST', '/decide', {'id': ids[0], 'action': 'skip'})[0] == 303
  status, text, _ = request(served.port, 'GET', '/')
  assert status == 200 and f'data-item-id="{ids[1]}"' in text and '0 of 6 reviewed' in text
  for i in ids[1:]:
    assert request(served.port, 'POST', '/decide', {'id': i, 'action': 'keep'})[0] == 303
  status, text, _ = request(served.port, 'GET', '/')
  assert f'data-item-id="{ids[0]}"' in text and 'Skipped before' in text  # the skip came back
  request(served.port, 'POST', '/decide', {'id': ids[0], 'action': 'relabel', 'label': ' mall '})
  status, text, _ = request(served.port, 'GET', '/')
  assert 'id="finished"' in text and '6 of 6 reviewed' in text
  # change of mind: the item page shows the decision; a new one replaces it
  status, text, _ = request(served.port, 'GET', '/item/' + ids[0])
  assert status == 200 and 'Already decided: <b>relabel</b>' in text
  request(served.port, 'POST', '/decide', {'id': ids[0], 'action': 'drop'})
  assert served.store.get(ids[0]) ['action'] == 'drop'
  assert len(served.store.rows('queue')) == 6
  health = json.loads(request(served.port, 'GET', '/health')[1])
  assert health == {'status': 'ok', 'reviewed': 6, 'items': 6, 'next': None}


@pytest.mark.parametrize('body,headers,status,needle', [
    ({'id': 'cqa/train/999', 'action': 'keep'}, {}, 404, "no item 'cqa/train/999'"),
    ({'id': 'cqa/train/100', 'action': 'fly'}, {}, 400, "unknown action 'fly'"),
    ({'id': 'cqa/train/100', 'action': 'relabel'}, {}, 400, 'relabel needs a label'),
    ({'id': 'cqa/train/100', 'action': 'relabel', 'label': ' '}, {}, 400, 'needs a label'),
    ({'id': 'cqa/train/100', 'action': 'relabel', 'label': 'x' * 201}, {}, 400, 'at most 200'),
    ({'id': 'cqa/train/100', 'action': 'drop', 'label': 'bank'}, {}, 400, 'drop takes no label'),
    ({'action': 'keep'}, {}, 400, "form field 'id' is missing"),
    ({'id': 'cqa/train/100', 'action': 'keep', 'who': 'me'}, {}, 400, "unknown form field 'who'"),
    ('id=cqa%2Ftrain%2F100&id=x&action=keep', {'Content-Type':
                                               'application/x-www-form-urlencoded'},
     400, "'id' given twice"),
    (b'id=\xff\xfe&action=keep', {'Content-Type': 'application/x-www-form-urlencoded'}, 400,
     'not valid urlencoded UTF-8'),
    ('{"id": "cqa/train/100"}', {'Content-Type': 'application/json'}, 415, 'HTML form post'),
    ('id=' + 'x' * 70000, {'Content-Type': 'application/x-www-form-urlencoded'}, 413,
     'at most 65536 bytes'),
    ({'id': 'cqa/train/100', 'action': 'keep'}, {'Origin': 'http://evil.example'}, 403,
     'another site'),
])
def test_malformed_posts_get_4xx_with_the_reason(served, body, headers, status, needle):
  got, text, _ = request(served.port, 'POST', '/decide', body, headers)
  assert got == status, text
  assert needle in _reason(text).replace('&#39;', "'"), text
  assert served.store.rows(include_skips=True) == []  # nothing written


def test_two_reviewers_posting_at_once_lose_nothing(served):
  ids = [i['id'] for i in served.items]

  def review(mine, label):
    for i in mine:
      assert request(served.port, 'POST', '/decide',
                     {'id': i, 'action': 'relabel', 'label': label})[0] == 303
      assert request(served.port, 'GET', '/')[0] == 200

  threads = [threading.Thread(target=review, args=(ids[k::2], f'l{k}')) for k in (0, 1)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  rows = {r['id']: r['label'] for r in served.store.rows('queue')}
  assert rows == {i: f'l{k % 2}' for k, i in enumerate(ids)}


def test_sparse_items_render(tmp_path):
  """Only the required fields; a given label outside the candidates; 12 candidates (keys
  1-9 for the first nine); no votes, no student: the page still renders and keep works."""
  cands = [f'c{i}' for i in range(12)]
  (tmp_path / 'q.jsonl').write_text(
      json.dumps({'rank': 1, 'id': 'x', 'input': 'in', 'candidates': cands,
                  'given_label': 'elsewhere'}) + '\n' +
      json.dumps({'rank': 2, 'id': 'y', 'input': 'in', 'candidates': []}) + '\n')
  server = ThreadServer(tmp_path / 'q.jsonl', str(tmp_path / 'd.sqlite'))
  try:
    status, text, _ = request(server.port, 'GET', '/')
    assert status == 200 and 'data-key="9"' in text
    keyed = text.count('<button type="submit" data-key=')
    assert keyed == 9 + 3 and '>c11<' in text  # 1-9, then k, d, s; c10 and c11 have no key
    assert 'no votes in the queue' in text and 'no student probabilities' in text
    assert request(server.port, 'POST', '/decide', {'id': 'x', 'action': 'keep'})[0] == 303
    assert server.store.get('x')['label'] == 'elsewhere'
    status, text, _ = request(server.port, 'GET', '/')
    assert status == 200 and 'data-item-id="y"' in text and '<span class="abstain">none' in text
    status, text, _ = request(server.port, 'POST', '/decide', {'id': 'y', 'action': 'keep'})
    assert status == 400 and 'no given label to keep' in _reason(text)
  finally:
    server.stop()


def test_other_4xx(served):
  assert request(served.port, 'GET', '/item/cqa/train/999')[0] == 404
  status, text, _ = request(served.port, 'GET', '/nowhere')
  assert status == 404 and 'no page GET /nowhere' in text
  assert request(served.port, 'GET', '/decide')[0] == 405
  request(served.port, 'POST', '/decide', {'id': 'cqa/train/100', 'action': 'keep'})
  status, text, _ = request(served.port, 'POST', '/decide', {'id': 'cqa/train/100',
                                                             'action': 'skip'})
  assert status == 409 and 'already decided (keep)' in _reason(text)
  assert served.store.get('cqa/train/100')['action'] == 'keep'


def test_token_guards_every_page(tmp_path):
  write_queue(tmp_path / 'queue.jsonl')
  token = 'a-review-token-0123456789'
  server = ThreadServer(tmp_path / 'queue.jsonl', str(tmp_path / 'd.sqlite'), token=token)
  try:
    form = {'id': 'cqa/train/100', 'action': 'keep'}
    assert request(server.port, 'GET', '/')[0] == 401
    assert request(server.port, 'POST', '/decide', form)[0] == 401
    assert request(server.port, 'GET', '/?token=wrong')[0] == 401
    status, _, response = request(server.port, 'GET', '/?token=' + token)
    assert status == 303 and response.getheader('location') == '/'
    cookie = response.getheader('set-cookie')
    assert 'HttpOnly' in cookie and 'SameSite=strict' in cookie
    assert request(server.port, 'GET', '/', headers={'Cookie': cookie.split(';')[0]})[0] == 200
    bearer = {'Authorization': f'Bearer {token}'}
    assert request(server.port, 'POST', '/decide', form, bearer)[0] == 303
    assert server.store.get('cqa/train/100')['action'] == 'keep'
  finally:
    server.stop()


def test_serve_binds_loopback_by_default_and_refuses_other_hosts_without_token(tmp_path,
                                                                                monkeypatch):
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser()
  page.add_arguments(parser)
  assert parser.parse_args(['--queue', 'q.jsonl']).host == '127.0.0.1'
  write_queue(tmp_path / 'queue.jsonl')
  queue = str(tmp_path / 'queue.jsonl')
  with pytest.raises(SystemExit, match='--host 0.0.0.0 is reachable from other machines'):
    cli.main(['serve', '--queue', queue, '--host', '0.0.0.0'])
  with pytest.raises(SystemExit, match='at least 16 characters'):
    cli.main(['serve', '--queue', queue, '--host', '0.0.0.0', '--token', 'short'])
  monkeypatch.delenv('REVIEW_TOKEN_UNSET', raising=False)
  with pytest.raises(SystemExit, match='REVIEW_TOKEN_UNSET: that environment variable is not'):
    cli.main(['serve', '--queue', queue, '--host', '0.0.0.0', '--token_env',
              'REVIEW_TOKEN_UNSET'])
  assert not (tmp_path / 'queue.decisions.sqlite').exists()  # refused before anything opened
  assert page.is_loopback('127.0.0.1') and page.is_loopback('::1')
  assert page.is_loopback('localhost') and not page.is_loopback('0.0.0.0')


def _good():
  return {'rank': 1, 'id': 'a', 'input': 'x', 'given_label': 'p', 'candidates': ['p', 'q']}


@pytest.mark.parametrize('line,needle', [
    ('{"rank": 2,', 'not valid JSON'),
    ('[1]', 'must be a JSON object, got list'),
    (json.dumps({k: v for k, v in _good().items() if k != 'input'}), "missing field 'input'"),
    (json.dumps(dict(_good(), rank='2')), 'rank is str'),
    (json.dumps(dict(_good(), rank=True)), 'rank is bool'),
    (json.dumps(dict(_good(), id='')), 'id is empty'),
    (json.dumps(dict(_good(), candidates='p q')), 'candidates is str'),
    (json.dumps(dict(_good(), votes={'palm': 3})), "the vote of 'palm' is int"),
    (json.dumps(dict(_good(), student_probs={'p': -0.1})), "student_probs\\['p'\\] = -0.1"),
    (json.dumps(dict(_good(), id='first')), "id 'first' again \\(first on line 1\\)"),
    (json.dumps(dict(_good(), id='b', rank=1)), 'rank 1 again'),
])
def test_a_bad_queue_line_is_named(tmp_path, line, needle):
  path = tmp_path / 'q.jsonl'
  path.write_text(json.dumps(dict(_good(), id='first')) + '\n\n' + line + '\n')
  with pytest.raises(page.QueueError, match=f'q.jsonl line 3: .*{needle}'):
    page.read_queue(str(path))
  with pytest.raises(SystemExit, match=f'q.jsonl line 3: .*{needle}'):
    cli.main(['serve', '--queue', str(path), '--port', '0'])


def test_queue_order_and_empty_queue(tmp_path):
  path = tmp_path / 'q.jsonl'
  path.write_text(''.join(json.dumps(dict(_good(), id=str(r), rank=r)) + '\n' for r in (3, 1, 2)))
  assert [i['id'] for i in page.read_queue(str(path))] == ['1', '2', '3']
  path.write_text('\n')
  with pytest.raises(page.QueueError, match='the queue is empty'):
    page.read_queue(str(path))
  with pytest.raises(page.QueueError, match='no such queue file'):
    page.read_queue(str(tmp_path / 'missing.jsonl'))
