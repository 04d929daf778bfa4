"""The CPU testbed of distilling step-by-step: the paper's claims as experiments on synthetic
word problems (dssb.data.word_problems) with a simulated teacher, each judged by code.

  claims.py   the claims as comparisons of cells, and the verdict rule
  report.py   README.md, report.json and plots of results/testbed (python -m dssb.report)
"""
