"""structinf: exact and approximate inference for neural structured prediction.

Shapes everywhere: ``B`` batch, ``T`` time (padded length), ``L`` labels.
"""

__version__ = "0.1.0"
