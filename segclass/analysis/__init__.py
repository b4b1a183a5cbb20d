"""Rebuild the paper's tables and figures from the MLflow runs of a sweep.

runs.py reads finished runs into a DataFrame; tables.py, curves.py, samples.py
and confusion.py turn it into Tables D.4/D.5, Figs. 5/6, Figs. C.10-C.12 and
Table 1; paper.py holds the paper's own numbers; report.py builds them all.
"""
