"""The command line: one thin entry per command over the stage functions; the demo that runs them all."""
