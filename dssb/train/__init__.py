"""The trainer: `train()` (what gin binds as `train.train`) and its parts.

Run it with `python -m dssb.train --gin_file=... --gin.KEY=VALUE` (dssb/train/__main__.py).
"""

from dssb.train.loop import train
from dssb.train.preemption import Preempted
from dssb.train.step import TrainState, make_loss_fn, make_train_step

__all__ = ['train', 'Preempted', 'TrainState', 'make_loss_fn', 'make_train_step']
