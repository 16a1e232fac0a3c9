"""Kernels from their sources to bootable trees: mirror, archive index, downloads, cache."""
