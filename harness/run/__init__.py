"""A run of the matrix: one kernel's life, the orchestration around it, the command line."""
