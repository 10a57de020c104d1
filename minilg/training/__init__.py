"""The training layer behind :mod:`minilg.train` (which holds the loop itself, to be read in one
sitting): the config and its flags, the run's state, data splits, optimiser pieces, checkpoint
files, the run-folder lock, DDP plumbing, metric files, evaluation, and rebuilding a model from
saved weights (:mod:`minilg.training.loading`).

Above this layer: the tools (:mod:`minilg.compare`, ...) and the command line (:mod:`minilg.cli`).
Below it: :mod:`minilg.data`, the models and the registry.
"""
