"""python -m dssb.review import: exported decisions (JSONL or CSV) back into a decisions file.

For merging a colleague's decisions into one's own file, or restoring a file from its export:
each file is validated whole (dssb.review.decisions.read_export names the first bad line) before
any row is written; an item's newer decision (by decided_at) wins over the stored one.
"""

from dssb.review import decisions


def add_arguments(parser):
  parser.add_argument('--db', required=True, help='the decisions file (SQLite) to write')
  parser.add_argument('--queue_name', required=True,
                      help="the queue they belong to (`serve` files decisions under the queue "
                      "file's name without extension)")
  parser.add_argument('files', nargs='+', help='exported decisions (.jsonl or .csv)')


def run(args) -> int:
  try:
    loaded = [(path, decisions.read_export(path)) for path in args.files]
  except (ValueError, FileNotFoundError) as e:
    raise SystemExit(f'dssb.review import: {e}') from None
  store = decisions.Store(args.db)
  for path, rows in loaded:
    written, older = store.import_rows(rows, args.queue_name)
    print(f'dssb.review import: {path}: {written} decisions stored in {args.db} (queue '
          f'{args.queue_name!r}); {older} older than the stored decision left out')
  store.close()
  return 0
