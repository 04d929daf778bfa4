"""Annotation survives faults: a proxy on 127.0.0.1 between the annotator and dssb.serve delays,
stalls, drops connections (before and after the server answered), returns 500s, garbage and
truncated answers; the annotator is SIGKILLed mid-run and restarted. Afterwards every input has
exactly its n outputs, and the server's request log shows no request answered once it was in
the cache. Servers that keep answering garbage, or refuse (4xx), stop the run with a clear
message. The API key never appears in a log, the cache or an output."""

import json
import os
import signal
import sqlite3
import subprocess

import pytest

import teacher_testlib as lib
from dssb import serve

pytestmark = pytest.mark.slow
N = 2
ROWS = 16
SCHEDULE = ('slow', None, 'drop_before', 'error500', None, 'garbage', 'drop_after', None,
            'truncate', 'stall', None, 'garbage', None, 'error500', 'drop_after', None)


def _config(tmp_path, url, **overrides):
  fields = dict(name="'faulty'", base_url=f"'{url}'", model="'tiny'",
                api_key_env="'DSSB_TEST_SERVE_KEY'", prompt="'bare_v1'", n=N, temperature=0.7,
                max_tokens=16, concurrency=3, timeout_s=1.5, max_retries=12)
  fields.update(overrides)
  path = tmp_path / 'faulty.gin'
  path.write_text('from __gin__ import dynamic_registration\nfrom dssb.teacher import config\n'
                  'config.TeacherConfig:\n' + ''.join(f'  {k} = {v}\n' for k, v in fields.items()))
  return str(path)


def _cmd(config_path, out, limit=ROWS):
  return lib.teacher_cmd('annotate', '--teacher', config_path, '--dataset', 'svamp', '--split',
                         'train', '--out', out, '--limit', str(limit), '--no_progress')


def _cached(cache_path):
  if not os.path.exists(cache_path):
    return 0
  try:
    with sqlite3.connect(cache_path, timeout=1) as db:
      return db.execute('SELECT COUNT(*) FROM completions').fetchone()[0]
  except sqlite3.OperationalError:  # table not created yet
    return 0


def test_faults_and_sigkill_lose_nothing_and_repeat_nothing(tiny_server, dss_data_dir, tmp_path):
  proxy = lib.FaultProxy(tiny_server.port, SCHEDULE, slow_s=0.3, stall_s=2.5)
  out = str(tmp_path / 'out')
  cache_path = os.path.join(out, 'annotation_cache.sqlite')
  env = lib.env(DSSB_DATA_DIR=dss_data_dir, DSSB_TEST_SERVE_KEY=tiny_server.api_key)
  cmd = _cmd(_config(tmp_path, proxy.url), out)
  try:
    first = subprocess.Popen(cmd, cwd=lib.REPO, env=env, text=True, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    assert lib.wait_for(lambda: _cached(cache_path) >= 6 or first.poll() is not None, 180)
    first.send_signal(signal.SIGKILL)
    out1, err1 = first.communicate(timeout=60)
    assert first.returncode == -signal.SIGKILL, f'finished before the kill:\n{err1[-3000:]}'
    at_kill = _cached(cache_path)
    assert 6 <= at_kill < ROWS * N
    second = subprocess.run(cmd, cwd=lib.REPO, env=env, text=True, capture_output=True,
                            timeout=600)
    assert second.returncode == 0, second.stderr[-4000:]
  finally:
    proxy.stop()

  # every fault kind happened
  assert all(proxy.counts[k] >= 1 for k in set(SCHEDULE) - {None}), proxy.counts
  folder = os.path.join(out, 'datasets', 'svamp', 'llm_faulty')
  records = lib.read_jsonl(os.path.join(folder, 'train_annotations.jsonl'))
  assert [r['row'] for r in records] == list(range(ROWS))
  assert all(len(r['samples']) == N for r in records)
  with open(os.path.join(folder, 'train_CoT_0.json')) as f:
    assert len(json.load(f)) == ROWS
  with open(os.path.join(folder, 'train_summary.json')) as f:
    summary = json.load(f)
  assert summary['requests']['cached_before'] == at_kill
  assert summary['requests']['sent'] == ROWS * N - at_kill
  # parse counts add up: every sample is counted once, ok or failed
  samples = summary['parse']['samples']
  assert samples['n'] == ROWS * N == samples['ok'] + samples['empty_label'] + samples[
      'label_not_in_set']
  with sqlite3.connect(cache_path) as db:
    rows = db.execute('SELECT key, request, created FROM completions').fetchall()
  assert len(rows) == len({k for k, _, _ in rows}) == ROWS * N

  # the server's log: each cached request was answered (200) before it was cached, and no
  # request was answered again once cached (the restart re-sent none of them)
  answered = {}
  for entry in tiny_server.log():
    if entry.get('status') == 200:
      answered.setdefault(entry['body_sha256'], []).append(entry['received'])
  twice_before_caching = 0
  for _, request, created in rows:
    times = answered.get(serve.body_sha256(json.loads(request)), [])
    assert any(t <= created for t in times), 'a cached answer the server never gave'
    assert not any(t > created for t in times), 'a request answered again after caching'
    twice_before_caching += len(times) > 1
  # drop_after / stall / garbage made the server answer some requests more than once, before
  # their answer reached the cache: the check above is not vacuous
  assert twice_before_caching >= 1

  # the key: sent to the server, never written or printed
  key = tiny_server.api_key
  for text in (out1, err1, second.stdout, second.stderr):
    assert key not in text
  for root, _, files in os.walk(out):
    for name in files:
      with open(os.path.join(root, name), 'rb') as f:
        assert key.encode() not in f.read(), name
  with open(tiny_server.request_log) as f:
    assert key not in f.read()
  assert key not in tiny_server.stderr()


def _stopped(argv, capsys):
  """The CLI's exit message (run in this process: it is the same code path as the command)."""
  from dssb.teacher import __main__ as cli  # pylint: disable=g-import-not-at-top
  with pytest.raises(SystemExit) as e:
    cli.main(argv[3:])
  captured = capsys.readouterr()
  return str(e.value), captured.out + captured.err


def test_garbage_answers_and_refusals_stop_with_a_clear_message(tiny_server, dss_data_dir,
                                                               tmp_path, monkeypatch, capsys):
  monkeypatch.setenv('DSSB_DATA_DIR', dss_data_dir)
  monkeypatch.setenv('DSSB_TEST_SERVE_KEY', tiny_server.api_key)
  proxy = lib.FaultProxy(tiny_server.port, ['garbage'])
  try:
    message, _ = _stopped(_cmd(_config(tmp_path, proxy.url, max_retries=2, concurrency=1),
                               str(tmp_path / 'garbage'), limit=1), capsys)
  finally:
    proxy.stop()
  assert 'malformed response 3 times' in message
  assert 'rerun the same command' in message

  monkeypatch.setenv('DSSB_TEST_SERVE_KEY', 'sk-wrong-key-123')
  message, printed = _stopped(_cmd(_config(tmp_path, tiny_server.url),
                                   str(tmp_path / 'refused'), limit=2), capsys)
  assert 'refused a request: HTTP 401' in message
  assert 'sk-wrong-key-123' not in message + printed

  monkeypatch.setenv('DSSB_TEST_SERVE_KEY', tiny_server.api_key)
  message, _ = _stopped(_cmd(_config(tmp_path, tiny_server.url, model="'gpt-4'"),
                             str(tmp_path / 'nomodel'), limit=1), capsys)
  assert "HTTP 404: model 'gpt-4' is not served here" in message
