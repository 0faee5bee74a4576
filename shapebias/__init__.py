"""shapebias: reproduce and extend Li et al. (NeurIPS 2023), "Emergence of Shape Bias in
Convolutional Neural Networks through Activation Sparsity".

The science modules (``sparsity``, ``models``, ``data``, ``metrics``, ``synthesis``) import
neither MLflow nor Ray; ``tracking``, ``cluster`` and ``cli`` are the glue.
"""

__version__ = "0.1.0"
