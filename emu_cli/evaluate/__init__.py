"""Evaluation: prompt sets, the paper's side-by-side protocol, win rates and reports."""
