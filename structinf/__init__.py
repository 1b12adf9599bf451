"""structinf: exact and approximate inference for neural structured prediction.

Shapes everywhere: ``B`` batch, ``T`` time (padded length), ``L`` labels.

- :mod:`structinf.ops`: the compiled ops (Viterbi, CRF forward-backward, the
  fused relaxed-energy step) as ``torch.ops.structinf.*``.
- :mod:`structinf.decode`: one call per inference method (the front door).
- :class:`LinearChainEnergy`, :class:`LinearChainCRF`: the energy tuple and
  the CRF layer.
- :mod:`structinf.reference`: float64 references and plain-PyTorch baselines.
"""

from . import decode, ops
from .crf import LinearChainCRF
from .energy import LinearChainEnergy

__version__ = "0.1.0"

__all__ = ["LinearChainCRF", "LinearChainEnergy", "decode", "ops", "__version__"]
