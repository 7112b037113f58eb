"""Benchmarks run by hand or with ``make bench``; never imported by the product."""
