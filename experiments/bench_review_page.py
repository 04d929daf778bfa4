"""The review page's answer time on a 10,000-item queue (issue 20's target: < 200 ms a page).

Three `python -m dssb.review serve` processes run at once on 127.0.0.1: a 10,000-item queue with
no decisions yet; the same queue with its first 9,000 items already decided (its pages count
9,000 decisions for the progress line, and its first "next" walks past them once); and a
reference queue just long enough for the run (rounds x cycles + 10 items). Rounds alternate
between them; each round is `--cycles` review steps as a browser makes them over one kept-alive
connection: POST a decision (answered 303), GET the next page (rendered). Reported: median and
95th percentile of each request kind, the step (POST + GET) median and its ratio to the
reference queue's, and each server's peak RSS (VmHWM). The machine is shared: the load average
at the end is recorded with the figures.

The queue is synthetic (CQA-shaped: a question with five answer choices, a 40-word rationale,
four sources' votes, five student probabilities): the page's cost does not depend on the words.

  python experiments/bench_review_page.py [--rounds 5] [--cycles 40]
"""

import argparse
import http.client
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, 'experiments'))

import perf_report  # pylint: disable=g-import-not-at-top,wrong-import-position
from dssb.review import decisions  # pylint: disable=g-import-not-at-top,wrong-import-position

CHOICES = ['bank', 'library', 'department store', 'mall', 'new york']
DEFAULT_OUT = 'results/perf/review_page.json'


def write_queue(path: str, n: int, seed: int = 0) -> list[str]:
  rng = random.Random(seed)
  ids = []
  with open(path, 'w') as f:
    for i in range(n):
      probs = [rng.random() for _ in CHOICES]
      total = sum(probs)
      given = rng.choice(CHOICES)
      item = {'rank': i + 1, 'id': f'cqa/train/{i}', 'dataset': 'cqa', 'split': 'train',
              'index': i,
              'input': f'Question {i}: where would you keep a thing you want to find later?\n'
                       'Answer Choices:\n' + '\n'.join(f'({l}) {c}'
                                                       for l, c in zip('abcde', CHOICES)),
              'given_label': given,
              'rationale': ' '.join(rng.choice(CHOICES + ['the', 'is', 'a', 'place'])
                                    for _ in range(40)),
              'candidates': CHOICES,
              'votes': {'palm': given, 'palm_sample_1': rng.choice(CHOICES), 'lf_money': None,
                        'flan_t5': rng.choice(CHOICES)},
              'student_probs': {c: p / total for c, p in zip(CHOICES, probs)},
              'quality': rng.random()}
      f.write(json.dumps(item) + '\n')
      ids.append(item['id'])
  return ids


def serve(queue: str, db: str):
  proc = subprocess.Popen([sys.executable, '-m', 'dssb.review', 'serve', '--queue', queue,
                           '--db', db, '--port', '0', '--reviewer', 'bench'],
                          cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
  line = proc.stdout.readline()
  port = int(re.search(r'http://127\.0\.0\.1:(\d+)/', line).group(1))
  return proc, port


def peak_rss_mib(pid: int) -> float:
  with open(f'/proc/{pid}/status') as f:
    kib = int(re.search(r'VmHWM:\s+(\d+) kB', f.read()).group(1))
  return kib / 1024


def step(conn, item_id: str) -> tuple[float, float, str]:
  """POST a decision on the shown item, GET the next page: (post_s, get_s, next shown id)."""
  body = urllib.parse.urlencode({'id': item_id, 'action': 'relabel', 'label': 'library'})
  t0 = time.perf_counter()
  conn.request('POST', '/decide', body=body,
               headers={'Content-Type': 'application/x-www-form-urlencoded'})
  r = conn.getresponse()
  r.read()
  t1 = time.perf_counter()
  assert r.status == 303, r.status
  conn.request('GET', '/')
  r = conn.getresponse()
  page = r.read().decode()
  t2 = time.perf_counter()
  assert r.status == 200, r.status
  return t1 - t0, t2 - t1, re.search(r'data-item-id="([^"]+)"', page).group(1)


def first_page(conn) -> tuple[float, str]:
  t0 = time.perf_counter()
  conn.request('GET', '/')
  r = conn.getresponse()
  page = r.read().decode()
  return time.perf_counter() - t0, re.search(r'data-item-id="([^"]+)"', page).group(1)


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--cycles', type=int, default=40, help='review steps per server a round')
  parser.add_argument('--items', type=int, default=10000)
  parser.add_argument('--out', default=DEFAULT_OUT)
  args = parser.parse_args()

  work = tempfile.mkdtemp(prefix='bench_review_page_')
  big, small = os.path.join(work, 'big.jsonl'), os.path.join(work, 'small.jsonl')
  big_ids = write_queue(big, args.items)
  small_n = args.rounds * args.cycles + 10  # the smallest queue that lasts the run
  write_queue(small, small_n)
  # 90% reviewed: the first 9/10 of the queue decided before the server starts
  late_db = os.path.join(work, 'late.sqlite')
  store = decisions.Store(late_db)
  for i in big_ids[:len(big_ids) * 9 // 10]:
    store.decide(i, 'keep', 'bank', 'earlier', queue='big')
  store.close()
  cases = {
      f'{args.items} items, none reviewed': (big, os.path.join(work, 'fresh.sqlite')),
      f'{args.items} items, 90% reviewed': (big, late_db),
      f'{small_n} items (reference)': (small, os.path.join(work, 'small.sqlite')),
  }
  servers, conns, shown, times = {}, {}, {}, {}
  for name, (queue, db) in cases.items():
    t0 = time.perf_counter()
    servers[name] = serve(queue, db)
    startup = time.perf_counter() - t0
    conns[name] = http.client.HTTPConnection('127.0.0.1', servers[name][1], timeout=30)
    first, shown[name] = first_page(conns[name])
    times[name] = {'startup_s': startup, 'first_get_s': first, 'post': [], 'get': []}
  try:
    for r in range(args.rounds):
      order = list(cases) if r % 2 == 0 else list(reversed(cases))
      for name in order:
        for _ in range(args.cycles):
          post_s, get_s, shown[name] = step(conns[name], shown[name])
          times[name]['post'].append(post_s)
          times[name]['get'].append(get_s)
    rss = {name: peak_rss_mib(proc.pid) for name, (proc, _) in servers.items()}
  finally:
    for proc, _ in servers.values():
      proc.kill()
      proc.wait()

  def ms(xs):
    return round(1000 * xs, 2)

  flags = f'--rounds {args.rounds} --cycles {args.cycles}' + (
      f' --items {args.items}' if args.items != 10000 else '') + (
          f' --out {args.out}' if args.out != DEFAULT_OUT else '')
  result = {'command': f'python experiments/bench_review_page.py {flags}',
            'machine': f'{platform.node()}: {os.cpu_count()} CPUs, Python '
                       f'{platform.python_version()}; other jobs may share it',
            'load_average': os.getloadavg(), 'target_ms': 200, 'cases': {}}
  ref = f'{small_n} items (reference)'
  ref_step = statistics.median(p + g for p, g in zip(times[ref]['post'], times[ref]['get']))
  lines = [f'review page, {args.rounds} alternating rounds x {args.cycles} steps per server '
           '(POST a decision, GET the next page; one kept-alive connection)',
           f'{"case":32} {"GET med":>8} {"GET p95":>8} {"POST med":>9} {"step med":>9} '
           f'{"x ref":>6} {"start s":>8} {"RSS MiB":>8}']
  for name in cases:
    t = times[name]
    steps = [p + g for p, g in zip(t['post'], t['get'])]
    case = {'get_median_ms': ms(statistics.median(t['get'])),
            'get_p95_ms': ms(statistics.quantiles(t['get'], n=20)[18]),
            'get_max_ms': ms(max(t['get'])),
            'post_median_ms': ms(statistics.median(t['post'])),
            'step_median_ms': ms(statistics.median(steps)),
            'step_vs_reference': round(statistics.median(steps) / ref_step, 2),
            'requests': 2 * len(steps), 'startup_s': round(t['startup_s'], 2),
            'first_get_ms': ms(t['first_get_s']), 'peak_rss_mib': round(rss[name], 1)}
    result['cases'][name] = case
    lines.append(f'{name:32} {case["get_median_ms"]:8.1f} {case["get_p95_ms"]:8.1f} '
                 f'{case["post_median_ms"]:9.1f} {case["step_median_ms"]:9.1f} '
                 f'{case["step_vs_reference"]:6.2f} {case["startup_s"]:8.2f} '
                 f'{case["peak_rss_mib"]:8.1f}')
  worst = max(c['step_median_ms'] for c in result['cases'].values())
  result['meets_target'] = worst < 200
  lines.append(f'slowest median step {worst:.1f} ms: '
               + ('under' if worst < 200 else 'OVER') + ' the 200 ms target')
  perf_report.write(args.out, result, lines)


if __name__ == '__main__':
  main()
