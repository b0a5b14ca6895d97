"""Reporting, one place for every command: per-seed statistics and Markdown tables (``tables``),
the paper's claims as paired differences with 95% intervals (``claims``), figures (``plots``) and
``bolt report`` over run directories (``stage``)."""
