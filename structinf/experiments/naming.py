"""Names the study shares: tasks, architectures, methods and their iteration counts.

A leaf of the experiments (no matplotlib, no study code), so the command line
can build its parser without loading the study.
"""

from __future__ import annotations

from ..data.tasks import TASKS as _TASK_SPECS
from ..decode import methods as _methods
from ..models.infnet import ARCHS

__all__ = ["TASKS", "ARCHS", "PLUS_ARCH", "REFINE_ITERATIONS", "METHODS", "KERNEL_METHODS",
           "PAPER_METHODS"]

#: The study's tasks, in the paper's order (POS, NER, CCG).
TASKS = tuple(_TASK_SPECS)

#: The inference-network architecture of Tables 4 and 6 for each task (paper Table 4).
PLUS_ARCH = {"twitter-pos": "cnn", "conll2003": "seq2seq", "ewt-large": "blstm"}

#: Iterations of instance tailoring and warm-started gradient descent (Table 6).
REFINE_ITERATIONS = _methods.REFINE_ITERATIONS

#: Every timed method, in table order (the registry :data:`structinf.decode.methods.METHODS`).
METHODS = _methods.names(timed=True)

#: Methods with a kernel-only callable (feature network timed apart).
KERNEL_METHODS = tuple(m for m in METHODS if _methods.get(m).has_kernel)

#: The columns of the paper's Table 3.
PAPER_METHODS = _methods.names(paper=True)
