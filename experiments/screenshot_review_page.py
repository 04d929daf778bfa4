"""A screenshot of the review page on real CQA train rows: results/label_quality/review_page.png.

The queue is built here from released data only (nothing typed in): CQA's train source file with
PaLM's label and rationale (the label training uses now), the votes of PaLM and of the CQA
labeling functions in dssb.review.lfs, and a cheap student's out-of-fold distribution: a
scikit-learn logistic regression over (question, choice) pairs whose features are the TF-IDF
words the choice shares with the question and with PaLM's rationale (so it reads the rationale:
it flags labels their own rationale does not support; the choice's own words are left out, as
they made the student worse than chance out of fold), trained on PaLM's labels with 5 folds
grouped by question, so no row is scored by a model that saw it; its scores are soft-maxed over
each row's five choices.
The queue holds the 20 rows whose PaLM label the student finds least likely (quality = the
student's probability of the given label, cleanlab's self-confidence); gold stays in the file
as the queue format allows, and the page never shows it. The server runs as a real process on
127.0.0.1; headless Debian chromium (Playwright) opens the first item and takes the picture.

  python experiments/screenshot_review_page.py [--data_dir ../shared/dss_data]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from dssb.data import splits  # pylint: disable=g-import-not-at-top,wrong-import-position
from dssb.review import lfs  # pylint: disable=g-import-not-at-top,wrong-import-position
from dssb.review import sources  # pylint: disable=g-import-not-at-top,wrong-import-position

OUT = 'results/label_quality/review_page.png'


def student_probs(rows, seed=0):
  """Out-of-fold P(choice | question, rationale) for every row, from PaLM's labels."""
  from scipy import sparse  # pylint: disable=g-import-not-at-top
  from sklearn import feature_extraction  # pylint: disable=g-import-not-at-top
  from sklearn import linear_model, model_selection  # pylint: disable=g-import-not-at-top
  questions = [sources.example_view('cqa', r)['question'] for r in rows]
  tfidf = feature_extraction.text.TfidfVectorizer(min_df=2, sublinear_tf=True)
  tfidf.fit(questions + [c for r in rows for c in r['choices']])
  q = tfidf.transform([questions[i] for i, r in enumerate(rows) for _ in r['choices']])
  c = tfidf.transform([ch for r in rows for ch in r['choices']])
  r = tfidf.transform([row['teacher_rationale'] or '' for row in rows for _ in row['choices']])
  x = sparse.hstack([q.multiply(c), r.multiply(c)]).tocsr()
  y = np.array([ch == r['teacher_label'] for r in rows for ch in r['choices']])
  group = np.repeat(np.arange(len(rows)), 5)
  trained = np.repeat(np.array([r['teacher_label'] in r['choices'] for r in rows]), 5)
  scores = np.zeros(len(y))
  folds = model_selection.GroupKFold(n_splits=5, shuffle=True, random_state=seed)
  for train, test in folds.split(x, y, group):
    train = train[trained[train]]  # rows without a parseable PaLM label teach nothing
    model = linear_model.LogisticRegression(C=4.0, max_iter=2000)
    model.fit(x[train], y[train])
    scores[test] = model.decision_function(x[test])
  scores = scores.reshape(len(rows), 5)
  probs = np.exp(scores - scores.max(1, keepdims=True))
  return probs / probs.sum(1, keepdims=True)


def build_queue(rows, probs, size):
  functions = lfs.registered('cqa')
  items = []
  for index, (row, p) in enumerate(zip(rows, probs)):
    given = row['teacher_label']
    if given not in row['choices']:
      continue  # no parseable PaLM label: nothing to review against
    view = sources.example_view('cqa', row, rationale=row['teacher_rationale'])
    votes = {'palm': given}
    votes.update({name: fn(view) for name, fn in functions.items()})
    items.append({
        'id': sources.example_id('cqa', 'train', index), 'dataset': 'cqa', 'split': 'train',
        'index': index, 'input': row['input'], 'given_label': given,
        'rationale': row['teacher_rationale'] or None, 'candidates': list(row['choices']),
        'votes': votes,
        'student_probs': {ch: round(float(x), 4) for ch, x in zip(row['choices'], p)},
        'quality': float(p[row['choices'].index(given)]), 'gold': row['label']})
  items.sort(key=lambda item: item['quality'])
  for rank, item in enumerate(items[:size], 1):
    item['rank'] = rank
  return items[:size], len(items)


def screenshot(queue_path, out):
  from playwright.sync_api import sync_playwright  # pylint: disable=g-import-not-at-top
  work = os.path.dirname(queue_path)
  proc = subprocess.Popen([sys.executable, '-m', 'dssb.review', 'serve', '--queue', queue_path,
                           '--db', os.path.join(work, 'd.sqlite'), '--port', '0',
                           '--reviewer', 'ana'],
                          cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  try:
    line = proc.stdout.readline()
    url = line.split('open ')[1].split()[0]
    with sync_playwright() as p:
      browser = p.chromium.launch(executable_path='/usr/bin/chromium', args=['--no-sandbox'])
      tab = browser.new_page(viewport={'width': 1280, 'height': 800})
      tab.goto(url)
      os.makedirs(os.path.dirname(out), exist_ok=True)
      tab.screenshot(path=out, full_page=True)
      shown = tab.get_attribute('#item', 'data-item-id')
      browser.close()
  finally:
    proc.kill()
    proc.wait()
  return shown


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--data_dir', default=os.environ.get(
      'DSSB_DATA_DIR', os.path.join(os.path.dirname(REPO), 'shared', 'dss_data')))
  parser.add_argument('--size', type=int, default=20, help='items in the queue')
  parser.add_argument('--out', default=OUT)
  args = parser.parse_args()
  rows = splits.source_rows('cqa', 'train', 'palm', args.data_dir)
  probs = student_probs(rows)
  labelled = [i for i, r in enumerate(rows) if r['teacher_label'] in r['choices']]
  student_right = np.mean([rows[i]['choices'][int(np.argmax(probs[i]))] == rows[i]['label']
                           for i in labelled])
  palm_right = np.mean([rows[i]['teacher_label'] == rows[i]['label'] for i in labelled])
  items, candidates = build_queue(rows, probs, args.size)
  work = tempfile.mkdtemp(prefix='review_page_shot_')
  queue_path = os.path.join(work, 'cqa_train_flagged.jsonl')
  with open(queue_path, 'w') as f:
    f.writelines(json.dumps(item) + '\n' for item in items)
  shown = screenshot(queue_path, args.out)
  wrong = sum(item['given_label'] != item['gold'] for item in items)
  print(f'CQA train: {len(rows)} rows, {len(labelled)} with a PaLM label (right on '
        f'{palm_right:.1%}); out-of-fold student right on {student_right:.1%} against gold')
  print(f'queue: the {len(items)} of {candidates} rows with the lowest student probability of '
        f'PaLM\'s label; PaLM wrong on {wrong} of them; {work}')
  print(f'{args.out}: {shown} (rank 1)')


if __name__ == '__main__':
  main()
