"""Real processes for the serving and teacher tests: dssb.serve in a subprocess, a fault-injecting
HTTP proxy on 127.0.0.1, a small SVAMP data folder, the teacher CLI."""

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Eight SVAMP train rows with short PaLM completions that parse (for a teacher trained in seconds).
SHORT_SVAMP_ROWS = (186, 475, 376, 205, 51, 541, 19, 543)


def env(**extra) -> dict:
  out = dict(os.environ, PYTHONUNBUFFERED='1', **extra)
  out['PYTHONPATH'] = REPO + os.pathsep + out.get('PYTHONPATH', '')
  return out


class Server:
  """`python -m dssb.serve` on a free port of 127.0.0.1; stop() ends it."""

  def __init__(self, checkpoint, *args, log_dir, extra_env=None, name='teacher'):
    self.request_log = os.path.join(log_dir, f'requests_{name}.jsonl')
    self.stderr_path = os.path.join(log_dir, f'serve_{name}.err')
    self.name = name
    cmd = [sys.executable, '-m', 'dssb.serve', '--checkpoint', str(checkpoint), '--port', '0',
           '--model_name', name, '--request_log', self.request_log, *args]
    self._stderr = open(self.stderr_path, 'w')
    self.proc = subprocess.Popen(cmd, cwd=REPO, env=env(**(extra_env or {})), text=True,
                                 stdout=subprocess.PIPE, stderr=self._stderr)
    line = self.proc.stdout.readline()
    match = re.search(r'http://127\.0\.0\.1:(\d+)/v1', line)
    if not match:
      self.stop()
      raise AssertionError(f'dssb.serve did not start: {line!r}\n' + self.stderr())
    self.port = int(match.group(1))
    self.url = f'http://127.0.0.1:{self.port}/v1'

  def stderr(self) -> str:
    with open(self.stderr_path) as f:
      return f.read()

  def log(self) -> list:
    if not os.path.exists(self.request_log):
      return []
    with open(self.request_log) as f:
      return [json.loads(line) for line in f]

  def health(self) -> dict:
    with urllib.request.urlopen(f'http://127.0.0.1:{self.port}/health', timeout=10) as r:
      return json.load(r)

  def stop(self):
    if self.proc.poll() is None:
      self.proc.send_signal(signal.SIGTERM)
      try:
        self.proc.wait(timeout=20)
      except subprocess.TimeoutExpired:
        self.proc.kill()
    self._stderr.close()


class FaultProxy:
  """An HTTP/1.1 proxy on 127.0.0.1 (its own thread) that forwards each request to the upstream
  port, or injects the fault the schedule (cycled over the requests it receives) names:

    slow          forwards, then holds the answer `slow_s`;
    stall         forwards, then holds the answer `stall_s` (past the client's timeout);
    drop_before   closes the connection without forwarding;
    drop_after    forwards (the server answers) but closes without relaying the answer;
    error500      answers 500 itself;
    garbage       forwards, then answers 200 with a broken body (bad JSON, HTML, wrong shape);
    truncate      forwards, then relays half the answer and closes;
    None          forwards.
  """

  KINDS = ('slow', 'stall', 'drop_before', 'drop_after', 'error500', 'garbage', 'truncate')

  def __init__(self, upstream_port: int, schedule, slow_s: float = 0.3, stall_s: float = 3.0):
    unknown = set(schedule) - set(self.KINDS) - {None}
    assert not unknown, unknown
    self.upstream_port, self.schedule, self.slow_s, self.stall_s = (upstream_port, list(schedule),
                                                                    slow_s, stall_s)
    self.received = 0
    self.counts = {k: 0 for k in self.KINDS + ('forwarded',)}
    self._garbage = 0
    self._ready = threading.Event()
    self._loop = asyncio.new_event_loop()
    self._thread = threading.Thread(target=self._run, daemon=True)
    self._thread.start()
    self._ready.wait(10)
    self.url = f'http://127.0.0.1:{self.port}/v1'

  def _run(self):
    asyncio.set_event_loop(self._loop)
    self._server = self._loop.run_until_complete(
        asyncio.start_server(self._handle, '127.0.0.1', 0))
    self.port = self._server.sockets[0].getsockname()[1]
    self._ready.set()
    self._loop.run_forever()

  def stop(self):
    async def shutdown():
      self._server.close()
      tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
      for t in tasks:
        t.cancel()
      await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
    self._loop.call_soon_threadsafe(self._loop.stop)
    self._thread.join(5)

  def _choose(self):
    self.received += 1
    return self.schedule[(self.received - 1) % len(self.schedule)]

  async def _forward(self, head: bytes, body: bytes) -> bytes:
    reader, writer = await asyncio.open_connection('127.0.0.1', self.upstream_port)
    lines = [l for l in head.decode('latin-1').split('\r\n')
             if l and not l.lower().startswith('connection:')]
    writer.write(('\r\n'.join(lines) + '\r\nConnection: close\r\n\r\n').encode('latin-1') + body)
    await writer.drain()
    response = await reader.read()
    writer.close()
    return response

  def _garbage_response(self) -> bytes:
    self._garbage += 1
    kind = self._garbage % 3
    body, ctype = [(b'{"choices": [{"text": "The ans', 'application/json'),
                   (b'<html><body>502 Bad Gateway</body></html>', 'text/html'),
                   (b'{"object": "text_completion", "result": 42}', 'application/json')][kind]
    return (f'HTTP/1.1 200 OK\r\ncontent-type: {ctype}\r\ncontent-length: {len(body)}\r\n'
            'connection: close\r\n\r\n').encode() + body

  async def _handle(self, reader, writer):
    try:
      head = await reader.readuntil(b'\r\n\r\n')
      match = re.search(rb'(?i)content-length:\s*(\d+)', head)
      body = await reader.readexactly(int(match.group(1))) if match else b''
      fault = self._choose()
      if fault:
        self.counts[fault] += 1
      if fault == 'drop_before':
        return
      if fault == 'error500':
        payload = b'{"error": {"message": "injected 500", "type": "server_error"}}'
        writer.write(b'HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\n'
                     b'content-length: %d\r\nconnection: close\r\n\r\n' % len(payload) + payload)
        await writer.drain()
        return
      response = await self._forward(head, body)
      self.counts['forwarded'] += 1
      if fault in ('slow', 'stall'):
        await asyncio.sleep(self.slow_s if fault == 'slow' else self.stall_s)
      if fault == 'drop_after':
        return
      if fault == 'truncate':
        writer.write(response[:len(response) // 2])
      elif fault == 'garbage':
        writer.write(self._garbage_response())
      else:
        writer.write(response)
      await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
      pass
    finally:
      writer.close()


def small_svamp(root: str, source: str, rows=SHORT_SVAMP_ROWS, test_rows: int = 8) -> str:
  """A data folder with a few SVAMP train rows (and their PaLM outputs) and test rows."""
  src = os.path.join(source, 'datasets', 'svamp')
  dst = os.path.join(root, 'datasets', 'svamp')
  os.makedirs(os.path.join(dst, 'llm'), exist_ok=True)
  with open(os.path.join(src, 'svamp_train.json')) as f:
    train = f.read().splitlines()
  palm = []
  for i in range(2):
    with open(os.path.join(src, 'llm', f'train_CoT_{i}.json')) as f:
      palm += json.load(f)
  with open(os.path.join(dst, 'svamp_train.json'), 'w') as f:
    f.write('\n'.join(train[i] for i in rows) + '\n')
  with open(os.path.join(dst, 'llm', 'train_CoT_0.json'), 'w') as f:
    json.dump([palm[i] for i in rows], f)
  with open(os.path.join(src, 'svamp_test.json')) as f:
    test = f.read().splitlines()[:test_rows]
  with open(os.path.join(dst, 'svamp_test.json'), 'w') as f:
    f.write('\n'.join(test) + '\n')
  return root


def teacher_cmd(*args) -> list:
  return [sys.executable, '-m', 'dssb.teacher', *args]


def read_jsonl(path: str) -> list:
  with open(path) as f:
    return [json.loads(line) for line in f]


def wait_for(predicate, timeout: float = 120, interval: float = 0.05):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if predicate():
      return True
    time.sleep(interval)
  return False
