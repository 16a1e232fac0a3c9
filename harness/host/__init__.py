"""The host: tools it needs (installed or named), the accelerator, virtiofsd."""
