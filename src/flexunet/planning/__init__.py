"""A config fitted to a user's data and machine: the dataset fingerprint and the plan."""
