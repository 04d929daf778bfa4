"""Context distillation (Snell, Klein, Zhong 2022, "Learning by Distilling Context").

The model given an engineered context (a scratchpad trigger, instructions, few-shot exemplars)
is the teacher; the same weights given the bare input are the student. The student learns
E_x E_{y ~ teacher(. | T_teacher(x))} log p_student(f(y) | T_student(x)) (Sec. 2), with hard
targets (the teacher's sampled answers, as the public code does) or soft ones (the token-level
KL of Sec. 2.4; dssb.losses.SoftTargets).

Modules:
  templates    teacher / student templates over raw inputs, answer extractors (Context)
  sources      the rows each recipe trains on: teacher, direct, step_by_step, oracle, distill
  distill_set  the distillation set on disk; the student's examples; answer-token alignment
  sample       the offline step: the teacher samples k outputs per unlabeled input (resumable)
  __main__     command line of the offline step (gin, like dssb.train)

Tasks are registered by dssb.data.tasks.get_context_distill_task_name; training is dssb.train
with gin/runs/context_distill.gin; the Table 3 cells are gin/paper/cd_table3_*.gin.
"""
