"""Data: tables of labelled texts, packaged datasets, truncation, token cache and batches.

No TensorFlow at import: the schema and the reports read from here; ``batches`` and
``token_cache`` import it themselves."""
