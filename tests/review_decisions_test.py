"""dssb.review.decisions: one committed SQLite row per (queue, id); where the reviewer left;
two writers at once; export / import round trips; bad export lines named."""

import json
import multiprocessing
import sqlite3

import pytest

from dssb.review import decisions

IDS = [f'cqa/train/{i}' for i in range(10)]


def _store(tmp_path, name='q'):
  store = decisions.Store(str(tmp_path / 'd.sqlite'))
  store.set_queue(name, IDS)
  return store


def test_next_follows_rank_and_skips_come_back_last(tmp_path):
  store = _store(tmp_path)
  assert store.next_id() == IDS[0] and store.progress() == (0, 10)
  store.decide(IDS[0], 'keep', 'bank', 'ana', when=100.0)
  store.decide(IDS[1], 'skip', None, 'ana', when=101.0)
  store.decide(IDS[2], 'drop', None, 'ana', when=102.0)
  store.decide(IDS[4], 'relabel', 'library', 'ana', when=103.0)
  assert store.next_id() == IDS[3]
  assert store.progress() == (3, 10)  # a skip is not a decision
  for i in (3, 5, 6, 7, 8):
    store.decide(IDS[i], 'keep', 'x', 'ana', when=104.0 + i)
  store.decide(IDS[9], 'skip', None, 'ana', when=90.0)  # skipped earlier than IDS[1]
  assert store.next_id() == IDS[9]  # no unseen item left: the oldest skip comes back
  store.decide(IDS[9], 'relabel', 'y', 'ana', when=120.0)
  assert store.next_id() == IDS[1]
  store.decide(IDS[1], 'keep', 'z', 'ana', when=121.0)
  assert store.next_id() is None and store.progress() == (10, 10)


def test_next_sees_another_reviewers_decisions(tmp_path):
  ana, bo = _store(tmp_path), _store(tmp_path)  # two servers on one file
  assert ana.next_id() == bo.next_id() == IDS[0]
  for i in IDS[:3]:
    bo.decide(i, 'keep', 'x', 'bo')
  assert ana.next_id() == IDS[3] and ana.progress() == (3, 10)
  ana.decide(IDS[3], 'skip', None, 'ana')
  ana.decide(IDS[4], 'drop', None, 'ana')
  assert bo.next_id() == IDS[5]


def test_changing_ones_mind_updates_the_row_and_skip_does_not_erase(tmp_path):
  store = _store(tmp_path)
  store.decide(IDS[0], 'relabel', 'library', 'ana', when=1e9)
  store.decide(IDS[0], 'drop', None, 'bo', when=1e9 + 5)
  assert store.get(IDS[0]) == {'id': IDS[0], 'action': 'drop', 'label': None, 'reviewer': 'bo',
                               'decided_at': '2001-09-09T01:46:45Z'}
  with pytest.raises(decisions.DecisionError, match='already decided'):
    store.decide(IDS[0], 'skip', None, 'ana')
  assert store.get(IDS[0])['action'] == 'drop'
  assert len(store.rows()) == 1
  # one row per (queue, id): the same id in another queue is another row
  store.decide(IDS[0], 'keep', 'bank', 'ana', queue='other')
  assert sorted(store.queues()) == ['other', 'q'] and len(store.rows()) == 2


@pytest.mark.parametrize('action,label,needle', [
    ('relabel', None, "needs a label"), ('relabel', '  ', 'needs a label'),
    ('keep', None, 'needs a label'), ('drop', 'bank', 'takes no label'),
    ('undo', None, "'undo' is not one of"), ('', 'x', 'is not one of')])
def test_bad_decisions_are_refused_with_the_reason(tmp_path, action, label, needle):
  store = _store(tmp_path)
  with pytest.raises(decisions.DecisionError, match=needle):
    store.decide(IDS[0], action, label, 'ana')
  assert store.rows(include_skips=True) == []


def test_a_killed_writer_loses_nothing_committed(tmp_path):
  """Every decide() is committed: another connection sees it before the writer closes."""
  store = _store(tmp_path)
  store.decide(IDS[0], 'keep', 'bank', 'ana')
  other = sqlite3.connect(str(tmp_path / 'd.sqlite'))
  assert other.execute('SELECT id, action FROM decisions').fetchall() == [(IDS[0], 'keep')]
  assert other.execute('PRAGMA journal_mode').fetchone()[0] == 'wal'


def _writer(path, reviewer, ids, label):
  store = decisions.Store(path)
  for i in ids:
    store.decide(i, 'relabel', f'{label}-{i}', reviewer, queue='q')
  store.close()


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
  path = str(tmp_path / 'd.sqlite')
  decisions.Store(path).close()
  ids = [f'x/{i}' for i in range(300)]
  ctx = multiprocessing.get_context('spawn')
  # both write the shared ids 100..199; each writes 100 of its own
  jobs = [ctx.Process(target=_writer, args=(path, 'ana', ids[:200], 'a')),
          ctx.Process(target=_writer, args=(path, 'bo', ids[100:], 'b'))]
  for j in jobs:
    j.start()
  for j in jobs:
    j.join(120)
    assert j.exitcode == 0
  store = decisions.Store(path)
  rows = {r['id']: r for r in store.rows('q')}
  assert sorted(rows) == sorted(ids)  # every item, once
  assert all(rows[i]['reviewer'] == 'ana' and rows[i]['label'] == f'a-{i}' for i in ids[:100])
  assert all(rows[i]['reviewer'] == 'bo' and rows[i]['label'] == f'b-{i}' for i in ids[200:])
  for i in ids[100:200]:  # last write wins, and the row is whole (label matches reviewer)
    assert rows[i]['label'] == f'{rows[i]["reviewer"][0]}-{i}'


def test_threads_writing_at_once_lose_nothing(tmp_path):
  import threading  # pylint: disable=g-import-not-at-top
  store = decisions.Store(str(tmp_path / 'd.sqlite'))
  ids = [f'x/{i}' for i in range(400)]
  threads = [threading.Thread(target=lambda k=k: [
      store.decide(i, 'keep', 'l', f'r{k}', queue='q') for i in ids[k::4]]) for k in range(4)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert sorted(r['id'] for r in store.rows('q')) == sorted(ids)


@pytest.mark.parametrize('ext', ['jsonl', 'csv'])
def test_export_import_round_trip(tmp_path, ext):
  store = _store(tmp_path)
  store.decide(IDS[0], 'relabel', 'new, york "city"', 'ana', when=1e9)  # CSV quoting
  store.decide(IDS[1], 'keep', 'bank', 'ana', when=1e9 + 1)
  store.decide(IDS[2], 'drop', None, 'ana', when=1e9 + 2)
  store.decide(IDS[3], 'skip', None, 'ana', when=1e9 + 3)
  path = str(tmp_path / f'out.{ext}')
  decisions.write_export(store.rows('q'), path)
  got = decisions.read_export(path)
  assert got == store.rows('q') and len(got) == 3  # the skip is not exported
  assert [g['label'] for g in got] == ['new, york "city"', 'bank', None]
  fresh = decisions.Store(str(tmp_path / 'fresh.sqlite'))
  assert fresh.import_rows(got, 'q') == (3, 0)
  assert fresh.rows('q') == got
  # an older import does not overwrite a newer decision
  fresh.decide(IDS[0], 'drop', None, 'bo', queue='q', when=2e9)
  assert fresh.import_rows(got, 'q') == (2, 1)
  assert fresh.get(IDS[0], 'q')['action'] == 'drop'


def _line(**over):
  row = {'id': 'cqa/train/1', 'action': 'relabel', 'label': 'bank', 'reviewer': 'ana',
         'decided_at': '2026-12-04T17:03:11Z'}
  row.update(over)
  return json.dumps({k: v for k, v in row.items() if v != '<absent>'})


@pytest.mark.parametrize('bad,needle', [
    ('{"id": ', 'not valid JSON'),
    ('[1, 2]', 'must be a JSON object'),
    (_line(action='skip', label=None), 'skip is not a decision'),
    (_line(action='maybe'), "'maybe' is not one of"),
    (_line(label=None), 'needs a label'),
    (_line(action='drop'), 'takes no label'),
    (_line(reviewer='<absent>'), "missing field 'reviewer'"),
    (_line(extra=1), "unknown field 'extra'"),
    (_line(decided_at='yesterday'), 'not an ISO 8601 time'),
    (_line(id=''), 'id must be a non-empty string'),
    (_line(id='cqa/train/0'), "'cqa/train/0' by 'ana' again \\(first on line 1\\)"),
])
def test_read_export_names_the_bad_line(tmp_path, bad, needle):
  path = tmp_path / 'd.jsonl'
  path.write_text(_line(id='cqa/train/0') + '\n\n' + _line(id='cqa/train/2', action='keep') +
                  '\n' + bad + '\n')
  with pytest.raises(ValueError, match=f'd.jsonl line 4: .*{needle}'):
    decisions.read_export(str(path))


def test_read_export_csv_errors_name_the_line(tmp_path):
  path = tmp_path / 'd.csv'
  path.write_text('id,action,label,reviewer,decided_at\n'
                  'a,keep,bank,ana,2026-12-04T17:03:11Z\n'
                  'b,relabel,,ana,2026-12-04T17:03:11Z\n')
  with pytest.raises(ValueError, match="d.csv line 3: action 'relabel' needs a label"):
    decisions.read_export(str(path))
  path.write_text('id,verdict\na,keep\n')
  with pytest.raises(ValueError, match='d.csv line 1: the CSV header must be'):
    decisions.read_export(str(path))


def test_export_command(tmp_path, capsys):
  from dssb.review import __main__ as cli  # pylint: disable=g-import-not-at-top
  store = _store(tmp_path)
  store.decide(IDS[0], 'relabel', 'library', 'ana')
  store.decide(IDS[1], 'skip', None, 'ana')
  out = tmp_path / 'e.csv'
  assert cli.main(['export', '--db', store.path, '--out', str(out)]) == 0
  assert [r['id'] for r in decisions.read_export(str(out))] == [IDS[0]]
  assert '1 decisions (relabel 1, keep 0, drop 0; 1 skipped' in capsys.readouterr().out
  store.decide(IDS[0], 'keep', 'x', 'ana', queue='other')
  with pytest.raises(SystemExit, match='holds 2 queues'):
    cli.main(['export', '--db', store.path, '--out', str(out)])


def test_import_command(tmp_path, capsys):
  from dssb.review import __main__ as cli  # pylint: disable=g-import-not-at-top
  store = _store(tmp_path)
  store.decide(IDS[0], 'relabel', 'library', 'ana', when=1e9)
  store.decide(IDS[1], 'drop', None, 'ana', when=1e9)
  exported = tmp_path / 'e.jsonl'
  decisions.write_export(store.rows('q'), str(exported))
  fresh = str(tmp_path / 'fresh.sqlite')
  assert cli.main(['import', '--db', fresh, '--queue_name', 'q', str(exported)]) == 0
  assert '2 decisions stored' in capsys.readouterr().out
  assert decisions.Store(fresh).rows('q') == store.rows('q')
  bad = tmp_path / 'bad.jsonl'
  bad.write_text(exported.read_text() + '{"id": "z"}\n')
  with pytest.raises(SystemExit, match="bad.jsonl line 3: missing field 'action'"):
    cli.main(['import', '--db', fresh, '--queue_name', 'other', str(bad)])
  assert decisions.Store(fresh).queues() == ['q']  # nothing of the bad file written
