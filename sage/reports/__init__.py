"""Persisted backtest runs and what is built from them: statistics, the tearsheet, decision explanations.

A *run directory* (see ``docs/reports.md``) is the durable form of one backtest: Nautilus's own reports,
the sage records published during the run, the bars it traded and sage's statistics. Everything in this
package reads a run directory, never a live engine, so a report can be rebuilt months later from disk.

Submodules are imported on demand (``sage.reports.run_dir``, ``.stats``, ``.tearsheet``, ``.explain``):
the tearsheet pulls in matplotlib, which a notebook calling ``explain`` does not need.
"""
