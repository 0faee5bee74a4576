"""Repository tooling (helm for the chart checks, manifests/ and the chart's docs from the chart).

Run from a checkout: ``python -m tools.devtools ...``. Not part of the installed package.
"""
