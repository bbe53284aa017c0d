"""Stage 4, baseline: task records in, stored under a fingerprint; stored records out when it matches.

    fingerprint.py  content hashes of models, adapters, tasks; BaselineKey
    keys.py         the key of every (model, task) of a run, and the rounds digest
    store.py        the directory store: atomic entries, a checksummed manifest, locks
    wandb_store.py  the same store kept in a W&B artifact (wandb://ENTITY/PROJECT/NAME)
    lookup.py       what a run already knows: stored baselines, cached candidate records
"""
