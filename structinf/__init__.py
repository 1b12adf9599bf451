"""structinf: exact and approximate inference for neural structured prediction.

Shapes everywhere: ``B`` batch, ``T`` time (padded length), ``L`` labels.

- :mod:`structinf.ops`: the compiled ops (Viterbi, CRF forward-backward, the
  fused relaxed-energy step) as ``torch.ops.structinf.*``.
- :mod:`structinf.decode`: one call per inference method (the front door).
- :class:`LinearChainEnergy`, :class:`LinearChainCRF`: the energy tuple and
  the CRF layer.
- :mod:`structinf.torch_ops`: vectorised pure-PyTorch implementations (fallback,
  export, benchmark baseline); :mod:`structinf.reference`: float64 oracles.
"""

from . import decode, models, ops
from .crf import LinearChainCRF
from .energy import LinearChainEnergy

__version__ = "0.1.0"

__all__ = ["LinearChainCRF", "LinearChainEnergy", "decode", "models", "ops", "__version__"]
