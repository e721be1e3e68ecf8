"""Plumbing every stage shares: errors, file writing and reading, the output ownership rule, progress, plots, the machine."""
