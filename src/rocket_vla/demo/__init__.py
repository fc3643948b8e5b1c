"""The offline end-to-end demo: collect, train baseline and ROCKET, evaluate, report."""
