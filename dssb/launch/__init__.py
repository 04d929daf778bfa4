"""Pod jobs on Cloud TPU VMs: the run on each worker, and a watcher that relaunches it after a
preemption (run_tpu.sh's verbs status, logs, stop, delete and watch). Standard library only."""
