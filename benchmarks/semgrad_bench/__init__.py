"""The uncertainty benchmark of semgrad-guard: greedy answers judged against gold
answers, every method's score, AUROC / AUPR / PRR with bootstrap intervals, costs and
plots. Run it with ``semgrad-bench`` (or ``python -m semgrad_bench``)."""
