"""Data layer of dssb: the four Distilling step-by-step datasets as seqio tasks.

Paper: Hsieh et al. 2023, "Distilling step-by-step" (arXiv 2305.02301), Sec. 3 and Appendix A.1;
data layout of the official release (github.com/google-research/distilling-step-by-step,
`datasets.zip`).

Modules (one concern each):
  sources          locate the data (DSSB_DATA_DIR), download + verify, readers
  teacher_outputs  parse teacher completions into (rationale, label) + failures
  splits           official fractions / 10% validation carve-out; assembled rows
  metrics          exact match and safe SVAMP equation accuracy (seqio metric fns)
  preprocess       task prefixes, target formats, tokenization with the NLI eos join
  vocab            SentencePiece vocabulary (path or DSSB_VOCAB); train_vocab
  tasks            the only seqio registration site (get_task_name, ...)
  tfds_builder     TFDS builder `dss` that writes the rows as sharded records
  addition         synthetic addition with a scratchpad (context distillation, Snell et al.)
  __main__         CLI: describe, download, train_vocab, build_tfds

The first four and addition are plain Python and import neither TensorFlow nor seqio, so
metrics, splits and parsers cost nothing to import. TensorFlow is only an input pipeline here:
the modules that need it (preprocess, vocab, tasks, tfds_builder) load it through
`dssb.import_tensorflow_quietly()`, which silences its log noise and keeps it off GPUs/TPUs so
that it never competes with JAX.
"""
