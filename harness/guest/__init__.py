"""What runs inside a guest. Standard library and mountcompat only: no host-only imports."""

# The host gives the guest a raw scratch disk of exactly this size; the guest tells it from
# any other disk by it.
SCRATCH_DISK_BYTES = (2 << 30) + (7 << 20)
