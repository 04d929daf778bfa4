"""The open teacher: annotate a dataset with an open model of your choice (paper Sec. 3.1 with
a teacher anyone may run and distill from), in the layout the trainer already reads.

Modules (one concern each):
  prompts   few-shot chain-of-thought prompts, versioned JSON files, checked and identified
  config    a teacher's gin file -> frozen TeacherConfig (API keys only by variable name)
  backends  OpenAI-compatible HTTP (the `openai` client) or a dssb checkpoint in process
  cache     SQLite, one committed row per answer: restarts lose nothing, repeat nothing
  votes     majority vote over parsed labels (self-consistency, several teachers)
  layout    outputs as a data folder: DSSB_DATA_DIR=OUT, --gin.TEACHER=NAME
  annotate  the annotation run and its summary
  combine   several teachers' labels voted, agreement recorded
  __main__  python -m dssb.teacher {annotate, combine, prompt}
"""
