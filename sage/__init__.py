"""sage: regime-aware, learned trading components for NautilusTrader."""

__version__ = "0.1.0"

