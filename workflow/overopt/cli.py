"""`overopt <step> ...`: the one entry point every Snakemake rule calls.

Arguments arrive already validated from the workflow config (see workflow/rules/common.smk);
this module only parses them and hands them to the module that owns the science.
"""

from __future__ import annotations

import argparse
import json
import sys

from .util import setup_logging


def _json(s: str):
    return json.loads(s)


def cmd_tokenizer(a):
    from .data import corpus_split, save_tokenizer

    train, held = corpus_split()
    save_tokenizer(train + held, a.out)


def cmd_pretrain(a):
    from .data import corpus_split
    from .models import pretrain

    train, held = corpus_split()
    pretrain(a.spec, train, held, a.tokenizer, a.out, a.steps, a.batch_size, a.seq_len, a.lr, a.seed, a.threads)


def cmd_gold(a):
    from .data import corpus_split
    from .gold import build_gold

    _, held = corpus_split()
    build_gold(a.spec, a.out, a.reference, held, a.prompt_chars, a.completion_tokens, a.seed)


def cmd_comparisons(a):
    from .data import build_comparisons

    build_comparisons(a.policy, a.gold, a.out, a.train_pairs, a.val_pairs, a.prompt_chars, a.completion_tokens,
                      a.label_noise, a.batch_size, a.seed, a.threads)


def cmd_train_rm(a):
    from .rm import train_rm

    train_rm(a.base, a.comparisons, a.out, a.data_size, a.seed, a.epochs, a.batch_size, a.lr, a.threads)


def cmd_rm_table(a):
    from .report import rm_table

    rm_table(a.metrics, a.out)


def cmd_pool(a):
    from .bon import make_pool

    make_pool(a.policy, a.out, a.prompts, a.samples, a.prompt_chars, a.completion_tokens, a.batch_size, a.seed, a.threads)


def cmd_score_gold(a):
    from .bon import score_gold

    score_gold(a.pool, a.gold, a.out, a.threads)


def cmd_score_proxy(a):
    from .bon import score_proxy

    score_proxy(a.pool, a.gold_scores, a.rm, a.out, a.threads)


def cmd_bon_curve(a):
    from .bon import write_curve

    write_curve(a.scores, a.out)


def main(argv=None):
    p = argparse.ArgumentParser(prog="overopt")
    sub = p.add_subparsers(dest="step", required=True)

    s = sub.add_parser("tokenizer", help="build the tiny world's character tokenizer")
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_tokenizer)

    s = sub.add_parser("pretrain", help="pretrain a tiny LM base on the corpus")
    s.add_argument("--spec", type=_json, required=True)
    s.add_argument("--tokenizer", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--steps", type=int, required=True)
    s.add_argument("--batch-size", type=int, required=True)
    s.add_argument("--seq-len", type=int, required=True)
    s.add_argument("--lr", type=float, required=True)
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(fn=cmd_pretrain)

    s = sub.add_parser("gold", help="build the gold reward directory")
    s.add_argument("--spec", type=_json, required=True)
    s.add_argument("--reference", default=None)
    s.add_argument("--out", required=True)
    s.add_argument("--prompt-chars", type=int, required=True)
    s.add_argument("--completion-tokens", type=int, required=True)
    s.add_argument("--seed", type=int, required=True)
    s.set_defaults(fn=cmd_gold)

    s = sub.add_parser("comparisons", help="sample pi_init pairs and label them by gold")
    s.add_argument("--policy", required=True)
    s.add_argument("--gold", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--train-pairs", type=int, required=True)
    s.add_argument("--val-pairs", type=int, required=True)
    s.add_argument("--prompt-chars", type=int, required=True)
    s.add_argument("--completion-tokens", type=int, required=True)
    s.add_argument("--label-noise", type=float, default=0.0)
    s.add_argument("--batch-size", type=int, default=512)
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(fn=cmd_comparisons)

    s = sub.add_parser("train-rm", help="train one proxy reward model")
    s.add_argument("--base", required=True)
    s.add_argument("--comparisons", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--data-size", type=int, required=True)
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--epochs", type=int, default=1)
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--lr", type=float, required=True)
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(fn=cmd_train_rm)

    s = sub.add_parser("rm-table", help="collect every proxy's metrics.json into one table")
    s.add_argument("--metrics", nargs="+", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_rm_table)

    s = sub.add_parser("pool", help="sample the best-of-n pool from pi_init")
    s.add_argument("--policy", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--prompts", type=int, required=True)
    s.add_argument("--samples", type=int, required=True)
    s.add_argument("--prompt-chars", type=int, required=True)
    s.add_argument("--completion-tokens", type=int, required=True)
    s.add_argument("--batch-size", type=int, default=1024)
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(fn=cmd_pool)

    s = sub.add_parser("score-gold", help="score the pool with the gold")
    s.add_argument("--pool", required=True)
    s.add_argument("--gold", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(fn=cmd_score_gold)

    s = sub.add_parser("score-proxy", help="score the pool with one proxy RM")
    s.add_argument("--pool", required=True)
    s.add_argument("--gold-scores", required=True)
    s.add_argument("--rm", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(fn=cmd_score_proxy)

    s = sub.add_parser("bon-curve", help="best-of-n gold and proxy against d, from one scores file")
    s.add_argument("--scores", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_bon_curve)

    a = p.parse_args(argv)
    setup_logging()
    a.fn(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
