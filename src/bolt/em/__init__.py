"""The BoLT EM loop: its settings (``loop``), the one engine behind ``bolt em`` and ``bolt demo``
(``engine``) and cross-fitted E-steps (``crossfit``)."""
