"""Stage 5, verdict: paired records and policies in; verdicts per task, tier, candidate, release out.

Pure functions: nothing here talks to a server, a file or the network.

    pairing.py     align base and candidate items by doc_id; anything unpaired is an error
    stats.py       the paired tests: exact binary, delta-method ratio, cluster-robust
    power.py       what a run could detect, and the items an undecided task would need
    sequential.py  confidence sequences for early stopping
    model.py       the verdict types (Verdict, TaskVerdict, ..., ReleaseVerdict) and their JSON
    judge.py       the rules: task -> tier -> candidate -> release
    wording.py     the sentences that explain a verdict
    run.py         a whole run judged (shared by `gate run` and `gate compare`)
    qlora_split.py a QLoRA adapter's change split into quantization and tuning effects
"""
