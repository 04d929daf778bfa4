"""Label quality: several label signals reconciled by weak supervision, a targeted review of the
teacher labels that are likely wrong, and a review page for a person (issue 20).

Modules (one concern each):
  sources    the vote table (example x source, abstain allowed) with provenance: teacher
             outputs (each sample its own source), labeling functions, gold, human decisions
  lfs        labeling functions: plain functions over an example, registered by name per dataset
  combine    majority vote and Snorkel's LabelModel; per-source coverage, overlap, conflict
  crossfit   out-of-fold student probabilities (scikit-learn and T5 rank classification)
  flag       cleanlab's find_label_issues over them; the ranked review queue
  apply      the reviewed result: relabel, drop, keep, neighbour relabel -> a training label set
  curated    a label set written as a teacher folder, so the trainer reads it unchanged
  decisions  reviewers' decisions in SQLite; export as a label source
  importer   exported decisions back into a decisions file
  page       the review page (FastAPI + Jinja2, server-rendered)
  __main__   python -m dssb.review {sources, combine, flag, serve, export, import, apply}
"""
