"""House style that a machine can check: no line of Python source over 100 characters."""

import pathlib

REPO = pathlib.Path(__file__).resolve().parent.parent
MAX_COLUMNS = 100
SOURCES = ('dssb/**/*.py', 'experiments/*.py', 'tests/*.py')


def test_lines_at_most_100_characters():
  files = sorted({p for pattern in SOURCES for p in REPO.glob(pattern)})
  assert len(files) > 30  # The globs found the package, the experiments and the tests.
  too_long = [f'{path.relative_to(REPO)}:{number}: {len(line)} characters'
              for path in files
              for number, line in enumerate(path.read_text(encoding='utf-8').splitlines(), 1)
              if len(line) > MAX_COLUMNS]
  assert not too_long, 'Lines over 100 characters:\n' + '\n'.join(too_long)
