"""The markdown summary of experiments/bench_paper_settings.py's result: what its .md says.

Apart from the benchmark so that a reader finds the measuring in one file and the wording in
this one, and so that `--render` (the .md again from the JSON) needs only the JSON.
"""


def summary_lines(result):
  c = result['train']['contenders']
  lines = [f"CQA step-by-step, 1024/256, batch {result['batch']}, T5 v1.1-small size (random "
           f"init), data vocabulary of {result['vocab']['size']} pieces; medians of "
           f"{len(result['train']['rounds'])} alternating rounds.",
           f"Machine: {result['machine']}, shared with other jobs (load average "
           f"{result['load_average_at_start'][0]:.1f} at the start, "
           f"{result['load_average_at_end'][0]:.1f} at the end); " + ', '.join(
               f'{k} {v}' for k, v in result['versions'].items()) + '.', '',
           f"{'train contender':17s} {'ex/s':>6s} {'non-pad tok/s':>13s} {'x official':>10s} "
           f"{'tokens/slots':>12s}  {'compile':20s} x official per round"]
  for name, v in c.items():
    per_round = ' '.join(f"{r[name]['examples_per_s'] / r['official']['examples_per_s']:.2f}"
                         for r in result['train']['rounds'])
    lines.append(f"{name:17s} {v['median_examples_per_s']:6.2f} "
                 f"{v['median_non_pad_tokens_per_s']:13.0f} {v['median_ratio_to_official']:10.2f} "
                 f"{v['token_share_of_slots']:12.1%}  " + (
                     f"{v['compiled_shapes']} shape(s), {v['compile_seconds']:.0f} s"
                     if 'compiled_shapes' in v else '-').ljust(22) + per_round)
  run = result['cqa_run']
  lines += ['', f"A {run['steps']}-step CQA run (batch {run['batch']}) compiles "
            f"{run['compiled_shapes']} bucketed train shapes; tokens / slots: " + ', '.join(
                f'{k} {v:.1%}' for k, v in run['token_share_of_slots'].items())]
  return (lines + eval_lines(result) + ['', 'Targets (issue 12):'] + [
      f"  {t['target']}: at least x{t['at_least']}, measured x{t['measured']:.2f}: "
      + ('met' if t['met'] else 'NOT met') for t in result['targets']]
          + (memory_lines(result) if 'peak_rss_mib' in result else []))


def memory_lines(result):
  """Per-process peak RSS and the warm-ups of the fresh processes (results since 2026-12-05)."""
  c, mem, gb = result['train']['contenders'], result['peak_rss_mib'], lambda mib: mib / 1024
  order = list(result['train']['rounds'][0])  # the first round's order of processes
  per_round = lambda key: '; '.join(f"{name} " + ' '.join(f'{v:.0f}' for v in c[name][key])
                                    for name in order if key in c[name])
  return ['', 'Each part runs in a process of its own, one after another: set-up (same-model '
          'check), evaluation, then each train contender in a fresh process per round (rotated '
          'order), which warms up (compiles, faults its buffers in) before its timed pass.',
          'Warm-up s per round: ' + per_round('warmup_seconds_per_round') + '.',
          'dssb compile s per round (a persistent compilation cache after round 0): '
          + per_round('compile_seconds_per_round') + '.',
          'Peak RSS (VmHWM) per process, GB: ' + ', '.join(
              f'{name} {gb(v):.1f}' for name, v in mem['children'].items())
          + f" (train: the largest of its rounds); this parent {gb(mem['parent']):.1f}.",
          f"Largest process: {gb(mem['largest_process']):.1f} GB ({mem['largest_child']}); "
          f"the command's peak is at most {gb(mem['parent_plus_largest_child']):.1f} GB (parent "
          "+ largest child).",
          'Before (all parts in one process, as until 2026-12-04; recorded, not measured by this '
          'run): 21.2 GB in the first train round of a reduced invocation (commit 3c5a574), '
          '22.8 GB at the settings above (issue 22).']


def eval_lines(result):
  e = result['evaluation']
  slots, b, in_flight = e['input_slots'], e['breakdown'], e.get('batches_in_flight')
  lines = ['', f"Evaluation: all {e['examples']} CQA validation examples, greedy, "
            f"{e['decode_tokens']} tokens, batches of {e['batch']}: dssb (sorted, bucketed"
            + (f", {e['batches_in_flight']} batches decoding at once" if in_flight else '')
            + f") {e['median_dssb_s']:.1f} s, HF generate {e['median_official_generate_s']:.1f} s: "
            f"x{e['median_speedup']:.2f}; with the official trainer's eval-loss forward "
            f"(+{e['official_eval_loss_forward_s']:.1f} s): "
            f"x{e['speedup_vs_official_evaluate']:.2f}. Same predictions: "
            f"{e['same_predictions_fraction']:.3f}. dssb warm-up (compile per "
            f"bucket) {e['dssb_warmup_s']:.0f} s, apart. Per round: " + ' '.join(
                f"x{r['speedup']:.2f}" for r in e['rounds']) + '.']
  if in_flight:  # results before 2026-12-04 decoded one batch at a time only
    lines.append(f"dssb one batch at a time: {e['median_dssb_one_batch_s']:.1f} s, "
                 f"x{e['median_speedup_one_batch']:.2f} (per round: " + ' '.join(
                     f"x{r['speedup_one_batch']:.2f}" for r in e['rounds'])
                 + f"); same predictions as with {in_flight}: " + str(all(
                     r['same_predictions_one_batch'] for r in e['rounds'])) + '.')
  lines += [f"Encoder input tokens / slots: dssb {slots['tokens'] / slots['dssb_slots']:.1%}, "
            f"official {slots['tokens'] / slots['official_slots']:.1%}, fixed "
            f"{slots['tokens'] / slots['fixed_slots']:.1%}.",
            f"Longest batch {b['batch_shape']}: decoding 1 token dssb "
            f"{b['dssb_1_tokens_s']:.2f} s, HF {b['official_1_tokens_s']:.2f} s; "
            f"per further step dssb "
            f"{b['dssb_per_step_ms']:.0f} ms, HF {b['official_per_step_ms']:.0f} ms."]
  return lines

