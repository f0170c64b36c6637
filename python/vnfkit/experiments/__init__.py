"""The study's experiments: figures and tables reproduced on vnfkit (``vnfkit experiment ...``)."""
