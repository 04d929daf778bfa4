"""dssb: distilling step-by-step and context distillation on a Flax T5."""

import os

# Quiet TensorFlow (imported by seqio / tfds) before anything imports it.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
