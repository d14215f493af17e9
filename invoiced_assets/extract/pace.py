"""How fast the API answers decides how the read is organised (`windows`, `scheduling`)."""

# Threads pay when pages wait on the network. When the API answers faster than this, the read is
# CPU-bound: long listings are not split into date windows, and objects are read one at a time
# (measured at 0 ms latency: more threads added 10-20 % of CPU, and every object finished late).
FAST_ROUND_TRIP_SECONDS = 0.02
# How often the objects not started yet look at whether those being read wait on the API.
PACE_CHECK_SECONDS = 0.02
