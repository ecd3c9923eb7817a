"""Helpers every stage of the pipeline uses: files, names, checks, provenance, batches."""
