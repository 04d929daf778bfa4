"""Writes a benchmark's figures: the JSON record and a short markdown summary beside it."""

import json
import os

from dssb import host_memory


def command(script: str, flags: str, out: str, default_out: str) -> str:
  """The shell command that reproduces a paper-settings benchmark: its data folder, the glibc
  setting it ran under when that was not dssb's default, its flags, and --out if not default."""
  return (('' if host_memory.keeps_freed_memory() else 'DSSB_KEEP_FREED_MEMORY=0 ')
          + f"DSSB_DATA_DIR={os.environ.get('DSSB_DATA_DIR', '')} python experiments/{script} "
          + flags + ('' if out == default_out else f' --out {out}'))


def write(out_json: str, result: dict, lines: list) -> None:
  """out_json gets `result`; out_json with .md gets the command and the summary lines."""
  os.makedirs(os.path.dirname(out_json) or '.', exist_ok=True)
  with open(out_json, 'w') as f:
    json.dump(result, f, indent=1)
  summary = '\n'.join(lines)
  print(summary)
  with open(os.path.splitext(out_json)[0] + '.md', 'w') as f:
    f.write(f'# {os.path.basename(out_json)}\n\nCommand: `{result["command"]}`\n\n'
            f'```\n{summary}\n```\n')
