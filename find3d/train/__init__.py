"""Multi-task training of the FIND interface (``find3d train-interface``)."""
