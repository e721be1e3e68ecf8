"""Synthetic head-CT data in the raw TEKNOFEST layout, and the demo config that trains on it."""
