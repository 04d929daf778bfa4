"""Sweeps over paper settings (dataset x recipe x fraction x seed x model size): the grid in gin
(spec.py), the runs one after another in process, resumable (runner.py), cluster task files
(skypilot.py). The command line is `python -m dssb.sweep` (__main__.py)."""

from dssb.sweep.runner import (SUMMARY, RunState, call_in_process, execute, read_summary, state,
                               use_compilation_cache)
from dssb.sweep.spec import Grid, Run, command_line, expand, grid, select
