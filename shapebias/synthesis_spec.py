"""Texture synthesis's settings as plain data: masks, methods, default layers and L-BFGS budget.

No torch here: the texture-synthesis job's ``Config`` offers these as defaults and choices, and
``--help`` reads them without loading the networks (:mod:`shapebias.synthesis`, whose modules
re-export every name).
"""

from __future__ import annotations

MASKS = ("all", "topk", "complement")
METHODS = ("texture", "inversion")
DEFAULT_LAYERS = ("relu1_1", "pool1", "pool2", "pool3", "pool4")  # VGG-19 layers, as the authors
STEPS = 100  # the authors' n_steps
ITERATIONS_PER_STEP = 20  # the authors' max_iter
