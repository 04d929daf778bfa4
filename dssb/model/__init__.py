"""The T5 student: network (t5x parameter tree) and cached decoding."""

from dssb.model.decoding import generate, score
from dssb.model.network import EOS_ID, PAD_ID, T5, T5Config, init_params

__all__ = ['T5', 'T5Config', 'generate', 'score', 'init_params', 'PAD_ID', 'EOS_ID']
