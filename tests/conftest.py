import os

# OpenMP threads spin while waiting; on a shared 2-core machine that slowed torch 50-100x.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
