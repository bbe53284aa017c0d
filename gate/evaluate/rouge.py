"""Per-document ROUGE, so summarization tasks pair document by document.

lm-eval's SCROLLS summary tasks (scrolls_govreport, scrolls_summscreenfd,
scrolls_qmsum) keep each document's (prediction, references) and hand them
all to SCROLLS' metric script as a corpus aggregation, so their samples
carry no per-document number and a comparison of two models could only be
unpaired. That script's number is a plain mean, though: per document it
scores the prediction against every reference with rouge-score's
`RougeScorer` (no stemming), keeps the best F-measure, and averages the
documents, x100 (rounded to 4 decimals). The gate computes the same
per-document values with the same library and settings; their mean is
lm-eval's number (gate.evaluate.lmeval_io checks it against lm-eval's, as it
does for every task), and base and candidate pair document by document.

SCROLLS also writes each text one sentence per line (nltk), which only
`rougeLsum` reads; rouge-score's tokenizer drops line breaks for rouge1,
rouge2 and rougeL, so those three need no sentence splitter (and no nltk data).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

#: the ROUGE variants computed per document (rougeLsum would need nltk's sentence data)
ROUGE_METRICS = ("rouge1", "rouge2", "rougeL")
#: lm-eval's SCROLLS metric rounds its corpus number to this many decimals
REPORTED_DECIMALS = 4


def is_rouge_pair(metric: str, value: object) -> bool:
    """Whether a sample's value is SCROLLS' (prediction, references) for a ROUGE metric."""
    return (metric in ROUGE_METRICS and isinstance(value, (list, tuple)) and len(value) == 2
            and isinstance(value[0], str) and isinstance(value[1], (list, tuple, str)))


@functools.cache
def _scorer(metric: str) -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer([metric], use_stemmer=False)


def document_rouge(metric: str, prediction: str, references: str | Sequence[str]) -> float:
    """One document's ROUGE F-measure x100: the best over its references (SCROLLS' rule)."""
    refs = [references] if isinstance(references, str) else list(references)
    if not refs:
        raise ValueError("a document with no reference summary cannot be scored")
    scorer = _scorer(metric)
    return max(scorer.score(ref, prediction)[metric].fmeasure for ref in refs) * 100.0
