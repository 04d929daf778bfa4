"""`python -m dssb.report` (see dssb/report/dispatch.py)."""

import sys

from dssb.report import dispatch

if __name__ == '__main__':
  sys.exit(dispatch.main())
