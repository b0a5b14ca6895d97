"""Tables, claims with confidence intervals, and plots over runs (``bolt report``, the demo)."""
