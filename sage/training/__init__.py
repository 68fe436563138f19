"""sage.training: reproducible training entry points (``sage train ...``).

* :mod:`sage.training.regime` -- the regime model bundle (``train_regime``; CLI helpers
  ``add_train_regime_arguments`` / ``run_train_regime``) and the causal HMM baseline.
"""
