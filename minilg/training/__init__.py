"""Helpers behind :mod:`minilg.train`: the config and its checks, optimiser pieces, checkpoint
files, the run-folder lock, DDP plumbing, metric files, evaluation of a saved run, ``compare``.

The training loop itself lives in :mod:`minilg.train` so that it reads in one sitting; this
package holds the pieces a newcomer can skip on a first read. The command line is
:mod:`minilg.cli`.
"""
