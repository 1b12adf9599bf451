"""Inference methods, one call each: the front door of structinf.

Every function takes an energy (:class:`structinf.energy.Energy`: the
feature network has already run once; every method then works on it) and
returns the labels plus what it found. A linear chain
(:class:`structinf.energy.LinearChainEnergy`) runs the compiled kernels; any
other energy with a relaxed form (the high-order energies of
:mod:`structinf.models.highorder`) runs the same methods through autograd, and a
method the energy cannot support (Viterbi without an exact argmax) is refused
by name.

>>> import structinf.decode as decode
>>> best = decode.viterbi(energy)
>>> gd = decode.gradient_descent(energy, iterations=50, lr=1.0, seed=0)
>>> net = decode.inference_network(infnet, batch, energy)
>>> tailored = decode.instance_tailored(infnet, batch, energy, iterations=5, lr=0.01)
>>> warm = decode.warm_start(infnet, batch, energy, iterations=5, lr=10.0)

Batch decoding replayed from CUDA graphs over static shape buckets
(:mod:`.graphs`), and decoders as modules for ``torch.export`` (:mod:`.export`):

>>> labels, scores = decode.graphed_viterbi(model)(batch)
>>> program = torch.export.export(decode.ViterbiDecoder(model), (words, chars, lengths))
"""

from .exact import ViterbiResult, viterbi
from .export import InferenceNetworkDecoder, ViterbiDecoder
from .graphs import (GraphDecoder, graphed_gradient_descent, graphed_inference_network,
                     graphed_viterbi)
from .networks import (InferenceNetworkResult, inference_network, instance_tailored,
                       network_result, warm_start)
from .relaxed import GradientDescentResult, gradient_descent, relaxed_labels

__all__ = [
    "ViterbiResult",
    "GradientDescentResult",
    "InferenceNetworkResult",
    "viterbi",
    "gradient_descent",
    "inference_network",
    "instance_tailored",
    "warm_start",
    "relaxed_labels",
    "network_result",
    "GraphDecoder",
    "graphed_viterbi",
    "graphed_gradient_descent",
    "graphed_inference_network",
    "ViterbiDecoder",
    "InferenceNetworkDecoder",
]
