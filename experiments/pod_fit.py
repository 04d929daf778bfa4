"""Does a T5-XXL distilling step-by-step run fit a TPU slice? Compile it for a simulated pod.

The paper's 11B runs (Hsieh et al. 2023, Figs. 6-9) train T5-XXL at batch 32 on inputs of 1024
tokens and targets of 256, with two sub-batches ('label' and 'rationale') of the same rows per
step. This script builds the trainer's own train step (its loss, optimizer and state sharding)
for a mesh of N simulated CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=N),
lowers and compiles it from abstract shapes only (no parameter is ever allocated), and reads
`compiled.memory_analysis()`: the per-device bytes of arguments, outputs, temporaries and
generated code. Each compile runs in its own subprocess (its own device count, a timeout);
finished rows are kept in the JSON, so a rerun only compiles what is missing.

  # The report grid (results/perf/pod_fit.{json,md}; about an hour on 2 CPU cores):
  .venv/bin/python experiments/pod_fit.py
  # One setting on some slices (keys: remat, dtype, opt, fsdp, model, scan, layers):
  .venv/bin/python experiments/pod_fit.py --setting remat=minimal,model=8 --slices 64,128,256
  # A small model (the CI test): any gin model file and bindings, batch and lengths.
  .venv/bin/python experiments/pod_fit.py --model_gin models/tiny.gin --batch 16 \
      --lengths 64,16 --slices 8 --setting model=2,fsdp=0 --out /tmp/fit.json
"""

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = 2**30
CHIPS = {'TPU v4': 32 * GIB, 'TPU v5e': 16 * GIB}  # HBM per chip (one JAX device each)
DEFAULTS = {'remat': 'full', 'dtype': 'bfloat16', 'opt': 'adafactor', 'fsdp': 1, 'model': 4,
            'scan': 1, 'layers': 0}  # layers 0: the gin file's depth
SLICES = (16, 32, 64, 128, 256)
# The report: a reference setting on every slice, then one change at a time.
REPORT_GRID = [
    ({}, SLICES),
    ({'model': 8}, SLICES),
    ({'model': 1}, SLICES),
    ({'remat': 'none'}, SLICES),
    ({'remat': 'minimal'}, SLICES),
    ({'remat': 'dots_saveable'}, SLICES),
    ({'dtype': 'float32'}, SLICES),
    ({'opt': 'adamw'}, SLICES),
    ({'opt': 'adamw', 'model': 8}, SLICES),
    ({'fsdp': 0}, SLICES),
    ({'fsdp': 0, 'model': 8}, SLICES),
    ({'opt': 'adamw', 'dtype': 'float32'}, SLICES),
    # Plain data parallelism, the official code's float32 AdamW, nothing recomputed.
    ({'fsdp': 0, 'model': 1, 'dtype': 'float32', 'opt': 'adamw', 'remat': 'none'}, SLICES),
    # Cross-checks on 2+2 and 4+4 XXL layers: scan against unrolled layers, with and without
    # remat; the per-layer slope; bfloat16 against float32.
    ({'layers': 2, 'scan': 0}, (64,)),
    ({'layers': 2, 'scan': 0, 'remat': 'none'}, (64,)),
    ({'layers': 2}, (64,)),
    ({'layers': 2, 'remat': 'none'}, (64,)),
    ({'layers': 4}, (64,)),
    ({'layers': 2, 'dtype': 'float32'}, (64,)),
    ({'layers': 4, 'dtype': 'float32'}, (64,)),
]


def parse_setting(text: str) -> dict:
  """'remat=minimal,model=8' -> the full setting dict (defaults for the keys not given)."""
  setting = dict(DEFAULTS)
  for item in filter(None, text.split(',')):
    key, _, value = item.partition('=')
    if key not in DEFAULTS:
      raise ValueError(f'--setting {text!r}: unknown key {key!r} (known: {sorted(DEFAULTS)})')
    setting[key] = int(value) if isinstance(DEFAULTS[key], int) else value
  return setting


def mesh_shape(setting: dict, devices: int, batch: int):
  """(data, model), or None when the batch cannot be split over the data axis."""
  model = setting['model']
  if devices % model or batch % (devices // model):
    return None
  return devices // model, model


# ---------------------------------------------------------------------------------------------
# Worker: one compile, in a process whose device count was set before JAX was imported.


def _trainer_step(config, tx, schedule, mesh, rules):
  """The trainer's step and state shardings, built as dssb.train builds them (alpha 0.5, no
  label smoothing or z-loss: the official code's loss). The only place naming dssb.train."""
  from dssb import train  # pylint: disable=g-import-not-at-top
  from dssb.model import T5  # pylint: disable=g-import-not-at-top
  from dssb.train import state  # pylint: disable=g-import-not-at-top
  loss_fn = train.make_loss_fn(T5(config), alpha=0.5, label_smoothing=0.0, z_loss=0.0)
  abstract_state, state_sharding = state.state_shardings(config, tx, mesh, rules)
  return train.make_train_step(loss_fn, tx, schedule), abstract_state, state_sharding


def _model_config(model_gin: str, bindings, setting: dict):
  import dataclasses  # pylint: disable=g-import-not-at-top
  import gin  # pylint: disable=g-import-not-at-top
  from dssb import gin_utils  # pylint: disable=g-import-not-at-top
  gin_utils.parse_gin([model_gin], list(bindings))
  config = gin.query_parameter('%MODEL_CONFIG').scoped_configurable_fn()
  gin.clear_config()
  changes = dict(dtype=setting['dtype'], remat_policy=setting['remat'],
                 scan_layers=bool(setting['scan']), dropout_rate=0.1)
  if setting['layers']:
    changes.update(num_encoder_layers=setting['layers'], num_decoder_layers=setting['layers'])
  return dataclasses.replace(config, **changes)


def _sharded_bytes(tree, shardings) -> int:
  """Bytes per device of a tree of abstract arrays under its shardings (the hand check)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  sizes = jax.tree.map(lambda x, s: int(np.prod(s.shard_shape(x.shape))) * x.dtype.itemsize,
                       tree, shardings)
  return int(sum(jax.tree.leaves(sizes)))


def compile_one(job: dict) -> dict:
  """Lowers and compiles the train step of `job`; returns its per-device memory."""
  compiled, info = compile_step(job)
  if job.get('dump_hlo'):
    name = '_'.join(f'{k}{v}' for k, v in job['setting'].items()) + f'_{job["devices"]}.hlo.txt'
    os.makedirs(job['dump_hlo'], exist_ok=True)
    with open(os.path.join(job['dump_hlo'], name), 'w') as f:
      f.write(compiled.as_text())
  stats = compiled.memory_analysis()
  memory = {k: int(getattr(stats, f'{k}_size_in_bytes')) for k in
            ('argument', 'output', 'alias', 'temp', 'generated_code')}
  total = (memory['argument'] + memory['output'] - memory['alias'] + memory['temp']
           + memory['generated_code'])
  return dict(info, memory=memory, total=total)


def compile_step(job: dict):
  """(compiled train step of `job`, facts about it: state bytes by sharding, times)."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from dssb import optimizers, sharding  # pylint: disable=g-import-not-at-top

  setting, batch = job['setting'], job['batch']
  config = _model_config(job['model_gin'], job['bindings'], setting)
  data, model = job['data'], job['model']
  mesh = sharding.make_mesh(data, model, jax.devices()[:data * model])
  rules = sharding.logical_axis_rules(fsdp=bool(setting['fsdp']))
  if setting['opt'] == 'adafactor':  # t5x fine-tuning: constant 1e-3
    schedule = optimizers.constant_schedule(1e-3, 1)
    tx = optimizers.adafactor(schedule)
  else:  # the official code's AdamW
    schedule = optimizers.linear_decay_schedule(5e-5, 10000)
    tx = optimizers.adamw(schedule)
  inputs, targets = job['lengths']
  sub_batch = {'encoder_input_tokens': jax.ShapeDtypeStruct((batch, inputs), jnp.int32),
               'decoder_input_tokens': jax.ShapeDtypeStruct((batch, targets), jnp.int32),
               'decoder_target_tokens': jax.ShapeDtypeStruct((batch, targets), jnp.int32),
               'decoder_loss_weights': jax.ShapeDtypeStruct((batch, targets), jnp.float32)}
  abstract_batch = {'label': sub_batch, 'rationale': dict(sub_batch)}
  rng = jax.ShapeDtypeStruct((2,), jnp.uint32)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    step, abstract_state, state_sharding = _trainer_step(config, tx, schedule, mesh, rules)
    batch_sharding, rep = sharding.batch_sharding(mesh), sharding.replicated(mesh)
    jitted = jax.jit(step, in_shardings=(state_sharding, batch_sharding, rep),
                     out_shardings=(state_sharding, rep), donate_argnums=0)
    start = time.time()
    lowered = jitted.lower(abstract_state, abstract_batch, rng)
    lowered_at = time.time()
    compiled = lowered.compile()
    compiled_at = time.time()
  params = jax.tree.leaves(abstract_state.params)
  return compiled, {
      'state_bytes_by_sharding': _sharded_bytes(abstract_state, state_sharding),
      'params_bytes_by_sharding': _sharded_bytes(abstract_state.params, state_sharding.params),
      'batch_bytes_by_sharding': _sharded_bytes(
          abstract_batch, jax.tree.map(lambda _: batch_sharding, abstract_batch)),
      'num_params': int(sum(x.size for x in params)),
      'lower_s': round(lowered_at - start, 1), 'compile_s': round(compiled_at - lowered_at, 1),
  }


# ---------------------------------------------------------------------------------------------
# Driver: one subprocess per (setting, slice), results kept in the JSON.


def _key(row):
  return json.dumps([row['setting'], row['devices']], sort_keys=True)


def run_job(job: dict, timeout: float) -> dict:
  # The program never runs: LLVM's optimisation of the CPU code (level 0) changes no buffer,
  # only the compile time (a third less here).
  flags = (f' --xla_force_host_platform_device_count={job["devices"]}'
           ' --xla_backend_optimization_level=0')
  env = dict(os.environ, XLA_FLAGS=os.environ.get('XLA_FLAGS', '') + flags, JAX_PLATFORMS='cpu')
  env['PYTHONPATH'] = os.pathsep.join(filter(None, [REPO, env.get('PYTHONPATH')]))
  start = time.time()
  try:
    proc = subprocess.run([sys.executable, __file__, '--worker', json.dumps(job)], env=env,
                          capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired:
    return dict(job, status=f'not compiled within {timeout:.0f} s')
  if proc.returncode:
    tail = (proc.stderr.strip().splitlines() or ['?'])[-1]
    return dict(job, status=f'error: {tail[:300]}')
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  return dict(job, status='ok', wall_s=round(time.time() - start, 1), **result)


TIGHT = 0.8  # above this share of HBM a fit is marked tight (see the notes in the report)


def fits(total: int) -> list:
  return [chip for chip, hbm in CHIPS.items() if total <= hbm]


def _mark(total: int, hbm: int) -> str:
  return '*' if total > TIGHT * hbm else ''


# ---------------------------------------------------------------------------------------------
# Report


def _gib(n):
  return f'{n / GIB:.2f}'


def _label(setting):
  return (f"{setting['remat']} | {setting['dtype']} | {setting['opt']} | "
          f"{'on' if setting['fsdp'] else 'off'} | {setting['model']} | "
          f"{'yes' if setting['scan'] else 'no'}")


def _smallest(rows, hbm):
  fitting = [r for r in rows if r['status'] == 'ok' and r['total'] <= hbm]
  if not fitting:
    return f'none up to {max(r["devices"] for r in rows)}'
  best = min(fitting, key=lambda r: r['devices'])
  return f"{best['devices']}{_mark(best['total'], hbm)}"


def _row_for(rows, devices, **setting):
  for r in rows:
    if r['devices'] == devices and r['status'] == 'ok' and all(
        r['setting'][k] == v for k, v in dict(DEFAULTS, **setting).items()):
      return r
  return None


def _cross_checks(rows) -> list:
  """The hand check of the state bytes, and scan against unrolled layers."""
  lines = []
  base = _row_for(rows, 64)
  if base:
    n, state, params = base['num_params'], base['state_bytes_by_sharding'], base[
        'params_bytes_by_sharding']
    arg, batch = base['memory']['argument'], base['batch_bytes_by_sharding']
    lines += [
        '## Cross-check by hand: parameters and optimizer state per device',
        '',
        f"The reference setting (first row) on 64 devices (16 data x 4 model, FSDP): {n:,} "
        f"parameters x 4 bytes (float32) / 64 devices = {n * 4 // 64:,} bytes "
        f"({_gib(n * 4 / 64)} GiB). The shardings give {params:,} bytes: every kernel is split "
        "over both axes, only the layer-norm scales (split over data only) and the relative "
        "position tables (over model only) are larger per device. Adafactor's factored moments "
        f"add {state - params:,} bytes (replicated, they are vectors). memory_analysis "
        f"reports arguments of {arg:,} bytes: that state + the batch shard ({batch:,} bytes: "
        "2 rows x (1024 + 3 x 256) x 4 bytes x 2 sub-batches) to within "
        f"{abs(arg - state - batch)} bytes, and an alias of the donated state: the numbers "
        "are per device.", '']
    adamw = _row_for(rows, 64, opt='adamw')
    if adamw:
      lines += [f"With AdamW the state is {adamw['state_bytes_by_sharding']:,} bytes = "
                f"{adamw['state_bytes_by_sharding'] / params:.3f} x the params (the params and "
                "two moments of their shape and sharding), "
                f"{_gib(adamw['state_bytes_by_sharding'])} GiB per device.", '']
  two = {(scan, remat): _row_for(rows, 64, layers=2, scan=scan, remat=remat)
         for scan in (0, 1) for remat in ('none', 'full')}
  if all(two.values()):
    t = {k: _gib(r['total']) for k, r in two.items()}
    lines += [
        '## Cross-check: scan against unrolled layers (2 encoder + 2 decoder XXL layers, 64 '
        'devices)', '',
        f"Without remat, unrolled {t[0, 'none']} GiB and scanned {t[1, 'none']} GiB: scan barely "
        'changes what the step holds. With remat full, scanned '
        f"{t[1, 'full']} GiB but unrolled {t[0, 'full']} GiB: XLA:CPU's schedule of the unrolled "
        "program apparently undoes the saving, while scan's backward loop forces the "
        "recomputation to happen layer by layer. The TPU compiler's scheduler is memory-aware; "
        'either way, all figures above are for scanned layers (`SCAN_LAYERS = True`), and the '
        'unrolled full-depth program could not be compiled here anyway (ENVIRONMENT.md: not '
        'within 24 minutes).', '']
  for dtype in ('bfloat16', 'float32'):
    small, deeper = _row_for(rows, 64, layers=2, dtype=dtype), _row_for(rows, 64, layers=4,
                                                                        dtype=dtype)
    full = _row_for(rows, 64, dtype=dtype)
    if small and deeper and full:
      slope = (deeper['total'] - small['total']) / 2
      lines += [f"Per-layer slope ({dtype} activations): 4+4 minus 2+2 layers = "
                f"{_gib(slope)} GiB per encoder+decoder layer pair; extrapolated to 24+24: "
                f"{_gib(small['total'] + 22 * slope)} GiB; compiled at 24+24: "
                f"{_gib(full['total'])} GiB.", '']
  return lines


NOTES = """## What memory_analysis on the CPU backend tells about a TPU, and what not

- It is the per-device program's buffer assignment after XLA's SPMD partitioner, which is the
  same pass on TPU: the sharding of every array, the all-gathers of FSDP and the reductions of
  gradients are the ones a TPU would run. Arguments, outputs and aliases are exact (shapes x
  dtypes of the shards, checked above by hand).
- Temporaries are what XLA:CPU's fusion, scheduling and buffer assignment keep live at the
  peak. The TPU compiler fuses differently, overlaps collectives asynchronously (which holds
  extra buffers), and lays arrays out in tiles: the two minor dimensions are padded (to 8 x 128
  for float32, 16 x 128 for bfloat16), so an array whose last dimension is 64 (head_dim, in the
  [B, H, L, D] attention layout) can take twice its size unless the layout pass picks another
  order. None of this is modelled here.
- bfloat16 is not native on XLA:CPU. In the scanned forward pass it widens the per-layer
  stack of saved layer inputs to float32 (the optimized HLO converts the bfloat16 stack and runs
  the loop's dynamic-update-slice in float32: `--dump_hlo DIR` writes it), so bfloat16 and
  float32 activations show nearly the same memory here. On a TPU, where bfloat16 is native, the
  stack should stay bfloat16: by the formula 24 layers x rows per device x (1024 + 256) x 4096
  x 2 bytes x 2 sub-batches less, e.g. 3.75 GiB less at 8 rows per device (16 devices, model
  axis 4). The bfloat16 figures here are float32-sized upper bounds for that stack.
- XLA:CPU never rematerialises to fit a memory limit (the TPU compiler can, at some speed
  cost), and, as above, honours remat only under scan.
- XLA:CPU reports no generated code (0); a TPU program takes some MiB of HBM.
- Nothing here counts the runtime's own reservations on a chip (program, infeed buffers, a few
  hundred MiB), or a second copy of the state while a checkpoint is written.
- So: read a setting as safe when it fits with a clear margin (say below 80% of HBM), and as a
  candidate to try on the smallest real slice when it is close to the limit either way.
"""


def write_report(record: dict, md_path: str) -> None:
  """The markdown summary: setting x slice table, smallest fitting slices, details, notes."""
  rows = record['rows']
  ok = [r for r in rows if r['status'] == 'ok']
  grid = [r for r in rows if not r['setting']['layers']]
  settings = []
  for r in grid:
    if r['setting'] not in settings:
      settings.append(r['setting'])
  slices = sorted({r['devices'] for r in rows})
  chips = list(CHIPS)
  lines = [
      '# Does T5-XXL distilling step-by-step fit a TPU slice?', '',
      f"Command: `{record['command']}` (CPU only: the devices are simulated; "
      f"{record.get('jax', '')}).", '',
      f"Model `gin/{record['model_gin']}`; global batch {record['batch']} rows, inputs "
      f"{record['lengths'][0]} and targets {record['lengths'][1]} tokens, two sub-batches "
      "('label', 'rationale') per step: the trainer's step (`dssb.train.make_train_step`, its "
      'loss, optimizer and state shardings), compiled for N simulated devices without '
      'allocating the model. Per device, in GiB: arguments + outputs - aliased (donated state) + '
      'temporaries + generated code, from `compiled.memory_analysis()`. HBM per chip: TPU v4 '
      '32 GiB, TPU v5e 16 GiB (one JAX device per chip; a v4 slice of N chips is called '
      'v4-(2N), a v5e slice of N chips v5litepod-N). The batch of 32 splits over at most 32 '
      'data shards, so larger slices need a wider model axis (blank cells). One compile took '
      f"{min(r['compile_s'] for r in ok)} to {max(r['compile_s'] for r in ok)} s here "
      f"(lowering {min(r['lower_s'] for r in ok)} to {max(r['lower_s'] for r in ok)} s).", '',
      'Columns: remat policy | activation dtype | optimizer | FSDP | model axis | scan_layers, '
      'then GiB per device on each slice (in brackets: the chips it fits; * above '
      f'{TIGHT:.0%} of their HBM, tight), then the smallest '
      'slice that fits.', '',
      '| remat | activations | optimizer | FSDP | model | scan | ' + ' | '.join(
          f'{n} devices' for n in slices) + ' | ' + ' | '.join(
              f'smallest {c}' for c in chips) + ' |',
      '|' + '---|' * (6 + len(slices) + len(chips))]
  for setting in settings:
    mine = [r for r in grid if r['setting'] == setting]
    cells = []
    for n in slices:
      r = next((r for r in mine if r['devices'] == n), None)
      if r is None:
        cells.append('')
      elif r['status'] != 'ok':
        cells.append(r['status'])
      else:
        where = ', '.join(c.split()[-1] + _mark(r['total'], CHIPS[c])
                          for c in fits(r['total'])) or '-'
        cells.append(f"{_gib(r['total'])} ({where})")
    smallest = [_smallest(mine, CHIPS[c]) for c in chips]
    lines.append(f'| {_label(setting)} | ' + ' | '.join(cells + smallest) + ' |')
  lines += ['', '## Every compile', '',
            '| remat | activations | optimizer | FSDP | model | scan | layers | devices | mesh '
            '(data x model) | arguments | outputs | aliased | temporaries | code | total GiB | '
            'lower s | compile s |', '|' + '---|' * 17]
  for r in rows:
    if r['status'] != 'ok':
      continue
    m = r['memory']
    lines.append(f"| {_label(r['setting'])} | {r['setting']['layers'] or 'all'} | "
                 f"{r['devices']} | {r['data']} x {r['model']} | " + ' | '.join(
                     _gib(m[k]) for k in ('argument', 'output', 'alias', 'temp',
                                          'generated_code')) +
                 f" | {_gib(r['total'])} | {r['lower_s']} | {r['compile_s']} |")
  lines += [''] + _cross_checks(rows) + [NOTES]
  with open(md_path, 'w') as f:
    f.write('\n'.join(lines))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--model_gin', default='models/t5_1_1_xxl.gin',
                      help='gin model file (path or relative to gin/)')
  parser.add_argument('--gin', action='append', default=[], help='extra gin binding')
  parser.add_argument('--batch', type=int, default=32, help='global batch (rows per sub-batch)')
  parser.add_argument('--lengths', default='1024,256', help='inputs,targets tokens')
  parser.add_argument('--setting', action='append', default=[],
                      help='key=value,... over the defaults ' + json.dumps(DEFAULTS) +
                      '; repeatable; none given: the report grid')
  parser.add_argument('--slices', default=','.join(map(str, SLICES)),
                      help='device counts for the --setting runs')
  parser.add_argument('--timeout', type=float, default=900, help='seconds per compile')
  parser.add_argument('--out', default=os.path.join(REPO, 'results', 'perf', 'pod_fit.json'))
  parser.add_argument('--dump_hlo', help='write each compiled program (optimized HLO) here')
  parser.add_argument('--worker', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.worker:
    print(json.dumps(compile_one(json.loads(args.worker))))
    return

  slices = tuple(int(s) for s in args.slices.split(','))
  grid = ([(parse_setting(s), slices) for s in args.setting] if args.setting else
          [(parse_setting(','.join(f'{k}={v}' for k, v in s.items())), sl)
           for s, sl in REPORT_GRID])
  lengths = [int(x) for x in args.lengths.split(',')]
  command = 'python experiments/pod_fit.py ' + ' '.join(
      a for a in (argv if argv is not None else sys.argv[1:]))
  import platform  # pylint: disable=g-import-not-at-top
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  record = {'command': command.strip(), 'model_gin': args.model_gin, 'bindings': args.gin,
            'batch': args.batch, 'lengths': lengths, 'chips_hbm_bytes': CHIPS,
            'jax': f"jax {metadata.version('jax')}, jaxlib {metadata.version('jaxlib')}, "
                   f"{platform.machine()} {os.cpu_count()} cores", 'rows': []}
  if os.path.exists(args.out):
    old = json.load(open(args.out))
    if (old['model_gin'], old['bindings'], old['batch'], old['lengths']) == (
        args.model_gin, args.gin, args.batch, lengths):
      record['rows'] = old['rows']
  done = {_key(r) for r in record['rows']}
  for setting, setting_slices in grid:
    for devices in setting_slices:
      shape = mesh_shape(setting, devices, args.batch)
      job = {'setting': setting, 'devices': devices, 'model_gin': args.model_gin,
             'bindings': args.gin, 'batch': args.batch, 'lengths': lengths}
      if shape is None or (_key(job) in done and not args.dump_hlo):
        continue
      job['dump_hlo'] = args.dump_hlo and os.path.abspath(args.dump_hlo)
      job['data'], job['model'] = shape
      row = run_job(job, args.timeout)
      row.pop('dump_hlo')
      record['rows'] = [r for r in record['rows'] if _key(r) != _key(row)] + [row]
      done.add(_key(row))
      total = f'{row["total"] / GIB:.2f} GiB/device' if row['status'] == 'ok' else row['status']
      print(f'{json.dumps(setting)} on {devices} ({shape[0]}x{shape[1]}): {total}'
            + (f', compile {row["compile_s"]} s' if row['status'] == 'ok' else ''), flush=True)
      os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
      with open(args.out, 'w') as f:
        json.dump(record, f, indent=1)
  with open(args.out, 'w') as f:
    json.dump(record, f, indent=1)
  write_report(record, os.path.splitext(args.out)[0] + '.md')


if __name__ == '__main__':
  main()
