"""rlrf_nb: a notebook-first research kit for RLRF (Lee et al., arXiv 2403.14238).

A thin helper library behind the numbered notebooks in ``notebooks/``.
Importing it changes no global state.
"""

__version__ = "0.1.0"
