"""Tables and plots of every results/ folder, from committed run summaries (one report path).

  stats            mean and standard error over seeds, their text, reproducible PNGs
  summaries        sweep run summaries: collect from a sweep root, load with named errors
  paper            Hsieh et al. 2023 Tables 1-2 and Fig. 4 beside ours (paper tables)
  context_distill  Snell et al. 2022 Table 3 (addition, CQA)
  open_teacher     the open-teacher pipeline at CPU scale
  label_quality    label quality: flagging, review budgets, combiners (issue 20)
  dispatch         `python -m dssb.report`: a folder's kind -> its module; --all, --check
The testbed's claims are rendered by dssb.testbed.report (dispatch imports it when needed).
"""

from dssb.report.stats import fmt, mean_se, pyplot, save_png  # noqa: F401
