"""Drop-in CRF layers with the interfaces of other libraries, on structinf's kernels.

- :mod:`structinf.compat.torchcrf`: ``CRF``, pytorch-crf 0.7.2's layer
  (``from structinf.compat.torchcrf import CRF`` in place of ``from torchcrf import CRF``).
- :mod:`structinf.compat.allennlp`: ``ConditionalRandomField`` and
  ``allowed_transitions``, AllenNLP 2.10's layer and constraint helper.

Each keeps the original's parameter names, initialisation, ``state_dict`` keys,
results and errors; the log-partition and the Viterbi search run in the compiled
CPU or CUDA kernels (:mod:`structinf.ops`). Importing this package imports neither
submodule; neither needs the original library.
"""

__all__ = ["torchcrf", "allennlp"]
