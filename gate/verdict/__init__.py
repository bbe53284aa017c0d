"""Stage 5, verdict: paired records and policies in; verdicts per task, tier, candidate, release out.

Pure functions: nothing here talks to a server, a file or the network.

    pairing.py     align base and candidate items by doc_id; anything unpaired is an error
    stats.py       the paired tests: exact binary, delta-method ratio, cluster-robust
    sequential.py  confidence sequences for early stopping
    judge.py       the rules: task -> tier -> candidate -> release, and the words that explain them
"""
