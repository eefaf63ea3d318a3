"""Code shared by the projects: config, distribution, runs, callbacks, saving, plots."""

import os

# TensorFlow's C++ start-up chatter (CPU feature notices, oneDNN) hides the
# training log; users can still set the variable themselves to see it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
