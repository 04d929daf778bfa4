"""Writes a benchmark's figures: the JSON record and a short markdown summary beside it."""

import json
import os


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
