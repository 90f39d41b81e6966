"""Check kinds: every scheduled producer of samples (probes and collectors)."""
