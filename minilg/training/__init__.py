"""Helpers behind :mod:`minilg.train`: checkpoint files, DDP plumbing, metric files, ``compare``.

The training loop itself lives in :mod:`minilg.train` so that it reads in one sitting; this
package holds the pieces a newcomer can skip on a first read.
"""
