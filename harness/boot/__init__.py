"""Booting a guest: the vng command line, and the process that runs and watches it."""
