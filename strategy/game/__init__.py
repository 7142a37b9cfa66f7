"""The round game in pure numpy/scipy (docs/model.md): scenario, competition,
coefficients, equilibrium, certificate, mechanism, policies, realised utilities, CLI.

Imports neither Flower nor torch (``tests/test_layering.py`` checks it), so the maths
runs anywhere: ``python -m strategy solve SCENARIO.json``.
"""
