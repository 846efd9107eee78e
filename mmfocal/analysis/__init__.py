"""Analysis: what one focal-attention query attends to (weights recorded in the model's forward
pass, key positions from the recorded key index), and the training histories mmengine logs.
Drawing is in :mod:`mmfocal.visualization`; the command lines in ``tools/analysis/``."""
