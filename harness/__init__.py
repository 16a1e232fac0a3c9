"""Boot kernels with virtme-ng, run the compatibility suites inside, collect a matrix."""
