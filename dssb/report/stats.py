"""What every report shares: mean and standard error over seeds, their text, and PNGs whose
bytes depend on the figure alone (so `python -m dssb.report --check` can compare them)."""

import math
import os


def mean_se(values) -> dict:
  """Mean, standard error of the mean (sample std / sqrt(n)) and n; None values are skipped."""
  values = [v for v in values if v is not None]
  n = len(values)
  if not n:
    return {'mean': None, 'se': None, 'n': 0}
  mean = sum(values) / n
  se = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n) if n > 1 else None
  return {'mean': mean, 'se': se, 'n': n}


def fmt(stat: dict, digits: int = 1) -> str:
  """'mean ± se (n=N)', or 'not run' for a cell without values."""
  if not stat or stat['mean'] is None:
    return 'not run'
  se = f' ± {stat["se"]:.{digits}f}' if stat['se'] is not None else ''
  return f'{stat["mean"]:.{digits}f}{se} (n={stat["n"]})'


def save_png(fig, path: str, dpi: int = 100) -> None:
  """A PNG whose bytes depend on the figure alone (no software or date metadata)."""
  fig.savefig(path, dpi=dpi, metadata={'Software': None})


def pyplot():
  """matplotlib.pyplot on the Agg backend, with the bundled DejaVu fonts (the same bytes on
  every machine with the pinned matplotlib)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  plt.rcParams.update({'font.family': 'DejaVu Sans', 'svg.hashsalt': 'dssb'})
  return plt


def same_bytes(a: str, b: str) -> bool:
  """Whether file b exists and holds exactly file a's bytes."""
  if not os.path.exists(b):
    return False
  with open(a, 'rb') as fa, open(b, 'rb') as fb:
    return fa.read() == fb.read()


def write_text(path: str, text: str) -> None:
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  with open(path, 'w') as f:
    f.write(text)
