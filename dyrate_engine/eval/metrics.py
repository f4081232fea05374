"""Caption metrics through pycocoevalcap's own scorers: CIDEr (CIDEr-D, as the COCO caption
evaluation reports it), corpus BLEU-4, and exact match.

Tokenisation: pycocoevalcap's ``PTBTokenizer`` runs Stanford CoreNLP (Java), so captions are
tokenised here instead: lowercase, put spaces around punctuation, split on whitespace, and drop the
punctuation tokens the COCO pipeline drops (``. , ! ? ; : - ' "`` and brackets). Scores are
therefore close to, not bit-identical with, numbers from the Java pipeline. Scores are on
pycocoevalcap's scale (CIDEr about 1.1 where papers print 110).
"""
from __future__ import annotations

import re

_PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"  # separated from words
_DROPPED = set(".,!?;:-'\"`()[]{}")  # what the COCO pipeline removes after PTB tokenisation
_SPLIT = re.compile(f"([{re.escape(_PUNCTUATION)}])")


def tokenize(text: str, *, keep_punctuation: bool = False) -> list[str]:
    """Lowercased word tokens of ``text``; punctuation is separated from words and dropped
    unless ``keep_punctuation``."""
    tokens = _SPLIT.sub(r" \1 ", text.lower()).split()
    return tokens if keep_punctuation else [t for t in tokens if t not in _DROPPED]


def _require_scorers():
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
    except ImportError:
        raise ImportError("the quality harness needs pycocoevalcap: "
                          "pip install 'dyrate_engine[eval]'") from None
    return Bleu, Cider


def caption_scores(hypotheses: dict, references: dict) -> dict:
    """Corpus scores of one caption per key against that key's reference captions.

    ``hypotheses``: ``{key: caption}``; ``references``: ``{key: [caption, ...]}`` (at least one
    each, same keys). Returns ``{"cider", "bleu4", "exact_match"}`` plus ``"per_item"``:
    ``{key: {"cider", "exact"}}``. CIDEr's document frequencies come from the references of the
    whole corpus (so one image alone scores 0); exact match is the share of hypotheses whose
    tokens, punctuation kept, equal those of one of their references."""
    if hypotheses.keys() != references.keys():
        raise ValueError("hypotheses and references must have the same keys")
    if not hypotheses:
        raise ValueError("no captions to score")
    empty = [k for k, refs in references.items() if not refs]
    if empty:
        raise ValueError(f"item {empty[0]!r} has no reference caption")
    Bleu, Cider = _require_scorers()
    keys = list(hypotheses)
    res = {i: [" ".join(tokenize(hypotheses[k]))] for i, k in enumerate(keys)}
    gts = {i: [" ".join(tokenize(r)) for r in references[k]] for i, k in enumerate(keys)}
    cider, per_cider = Cider().compute_score(gts, res)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    exact = [any(tokenize(hypotheses[k], keep_punctuation=True)
                 == tokenize(r, keep_punctuation=True) for r in references[k]) for k in keys]
    return {"cider": float(cider), "bleu4": float(bleu[3]),
            "exact_match": sum(exact) / len(exact),
            "per_item": {k: {"cider": float(c), "exact": e}
                         for k, c, e in zip(keys, per_cider, exact)}}
