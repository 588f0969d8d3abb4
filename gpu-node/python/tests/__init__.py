"""Standard-library tests of qvl_worker: `python3 -m unittest discover -s gpu-node/python -t gpu-node/python`."""
