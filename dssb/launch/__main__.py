"""Command line behind `run_tpu.sh status|logs|stop|delete|watch` (run_tpu.sh VERB --help).

  python3 -m dssb.launch --tpu NAME --zone ZONE [--project P] [--queued] VERB [...]
"""

import argparse
import os
import sys

from dssb.launch import pod as pod_lib
from dssb.launch import watch as watch_lib


def parse_args(argv):
  parser = argparse.ArgumentParser('python3 -m dssb.launch', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--tpu', required=True)
  parser.add_argument('--zone', required=True)
  parser.add_argument('--project', default='')
  parser.add_argument('--queued', action='store_true', help='a queued resource of that name')
  verbs = parser.add_subparsers(dest='verb', required=True)
  verbs.add_parser('status', help="the VM's state and the run's on each worker")
  logs = verbs.add_parser('logs', help="each worker's last log lines, or follow one")
  logs.add_argument('--lines', type=int, default=20)
  logs.add_argument('--worker', type=int)
  logs.add_argument('--follow', action='store_true')
  stop = verbs.add_parser('stop', help='SIGTERM, then SIGKILL after --grace_seconds')
  stop.add_argument('--grace_seconds', type=int, default=300)
  verbs.add_parser('delete', help='delete the VM (or the queued resource)')
  watch = verbs.add_parser('watch', help='relaunch after preemptions until the run is done')
  watch.add_argument('--done_file', help='MODEL_DIR/results.json (none: every worker exit 0)')
  watch.add_argument('--poll_seconds', type=float, default=60.0)
  watch.add_argument('--max_relaunches', type=int, default=10)
  watch.add_argument('--backoff_seconds', type=float, default=60.0)
  watch.add_argument('--grace_seconds', type=int, default=120)
  watch.add_argument('--delete_when_done', action='store_true')
  watch.add_argument('--launch_first', action='store_true', help='launch when nothing runs')
  watch.add_argument('relaunch', nargs='+', help='after --: the launch command')
  return parser.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  pod = pod_lib.Pod(args.tpu, args.zone, args.project, args.queued)
  try:
    if args.verb == 'status':
      print('\n'.join(pod_lib.status(pod)))
    elif args.verb == 'logs':
      command = pod_lib.logs_command(pod, args.lines, args.worker, args.follow)
      os.execvp(command[0], command)
    elif args.verb == 'stop':
      print('\n'.join(pod_lib.stop(pod, args.grace_seconds)) or 'no worker answered')
    elif args.verb == 'delete':
      pod_lib.delete(pod)
      print(f'deleted {args.tpu}')
    else:
      settings = watch_lib.Settings(args.done_file, args.poll_seconds, args.max_relaunches,
                                    args.backoff_seconds, grace_seconds=args.grace_seconds,
                                    delete_when_done=args.delete_when_done)
      return watch_lib.main(pod, args.relaunch, settings, args.launch_first)
  except pod_lib.GcloudError as e:
    print(f'run_tpu.sh {args.verb}: {e}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
