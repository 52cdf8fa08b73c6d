"""rlrf_nb: a notebook-first research kit for RLRF (Lee et al., arXiv 2403.14238); importing it changes no state."""

__version__ = "0.1.0"
