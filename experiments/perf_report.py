"""Writes a benchmark's figures: the JSON record and a short markdown summary beside it."""

import json
import os

from dssb import host_memory


def command(script: str, flags: str, out: str, default_out: str) -> str:
  """The shell command that reproduces a paper-settings benchmark: its data folder, the glibc
  setting it ran under when that was not dssb's default, its flags, and --out if not default."""
  prefix = {'kept': 'DSSB_KEEP_FREED_MEMORY=1 ', 'bounded': '',
            'off': 'DSSB_KEEP_FREED_MEMORY=0 '}[host_memory.mode()]
  return (prefix
          + f"DSSB_DATA_DIR={os.environ.get('DSSB_DATA_DIR', '')} python experiments/{script} "
          + flags + ('' if out == default_out else f' --out {out}'))


def memory() -> dict:
  """This process's peak resident memory and its largest finished child's, in MiB."""
  return dict(host_memory.report(), peak_rss_children_mib=host_memory.peak_rss_mib(True))


def write(out_json: str, result: dict, lines: list, measured: bool = True) -> None:
  """out_json gets `result`; out_json with .md gets the command and the summary lines. A
  measuring run (not a re-render from the JSON) records the peak RSS of its process and of its
  largest child process, unless the result has its own."""
  if measured:
    result.setdefault('host_memory', memory())
  mem = result.get('host_memory')
  if mem and 'peak_rss_mib' in mem:
    lines = list(lines) + ['', f'Peak RSS: {mem["peak_rss_mib"]:,.0f} MiB this process'
                           + (f', {mem["peak_rss_children_mib"]:,.0f} MiB its largest child'
                              if mem.get('peak_rss_children_mib') else '')
                           + (' (glibc keeps freed blocks under 32 MiB)'
                              if mem.get('malloc_mode') == 'bounded'
                              else ' (glibc keeps freed memory)' if mem.get('keeps_freed_memory')
                              else '')]
  os.makedirs(os.path.dirname(out_json) or '.', exist_ok=True)
  with open(out_json, 'w') as f:
    json.dump(result, f, indent=1)
  summary = '\n'.join(lines)
  print(summary)
  with open(os.path.splitext(out_json)[0] + '.md', 'w') as f:
    f.write(f'# {os.path.basename(out_json)}\n\nCommand: `{result["command"]}`\n\n'
            f'```\n{summary}\n```\n')
