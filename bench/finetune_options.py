"""The stage options of `BalancedFinetune` side by side, from the saved paired runs of `bench_finetune.py` (no training).

    python bench/finetune_options.py

For each set: every option's balanced accuracy minus the default `BalancedFinetune()`'s (the options are `BalancedFinetune(...)`'s arguments) and minus the best single technique's
(plain CE with `PriorShift('uniform')`, or `LogitAdjustedLoss` for the whole fit: whichever has the higher mean), in points,
with 95% paired-t intervals over the seeds; its many-shot recall; and what its stage costs, as a fraction of one natural epoch of
the same fit (the stage's training phases, cache included; for mode='tau', what its pass adds to the last epoch). Runs are
deterministic per seed, so rows saved by different runs of the same seed pair (plain CE reproduces its saved rows to the digit).
"""
import numpy as np, pandas as pd
from pathlib import Path
from scipy import stats

R = Path(__file__).parent/'results'
SETS = {'digits_lt(100): 10 classes, resnet18, 8 epochs': ['finetune_choice_digits.csv', 'finetune_3x_digits.csv'],
        'glyphs_lt(): 1,000 classes, small convnet, 5 epochs': ['finetune_choice_many_0_4.csv', 'finetune_choice_many_5_9.csv', 'finetune_3x_many.csv'],
        'photos_lt(): 27 classes, resnet18, 8 epochs (the confirmation set)': ['finetune_choice_photos.csv', 'finetune_3x_photos.csv']}
DEFAULT = 'BalancedFinetune classifier (cached; 10 passes in 3x batches)'
OPTIONS = {DEFAULT: '`BalancedFinetune()` (the default: the classifier on ten passes of its cached inputs, in 3x batches)',
           'BalancedFinetune head without re-init': "`cache=False` (fastai's head on balanced batches of images; the default where a cache cannot work)",
           'BalancedFinetune classifier (cached; 10 passes)': "`n=10*len(dls.train_ds), bs=dls.bs` (ten passes in the fit's batches)",
           'BalancedFinetune classifier (cached)': "`n=None, bs=dls.bs` (one pass over the cache)",
           'BalancedFinetune classifier (last-epoch cache)': "`cache='last_epoch', n=None, bs=dls.bs`",
           'BalancedFinetune scales (LWS; cached)': "`train='scales', n=None, bs=dls.bs` (LWS)",
           'BalancedFinetune tau-norm (no stage)': "`mode='tau'` (τ-normalisation)"}
SINGLES = {'plain CE + PriorShift(uniform)': "plain CE + `PriorShift('uniform')`", 'LogitAdjustedLoss (whole fit)': '`LogitAdjustedLoss`'}


def load(files):
    df = pd.concat([pd.read_csv(R/f) for f in files], ignore_index=True).drop_duplicates(['method', 'seed'])
    return df


def paired(df, a, b, col='balanced_accuracy'):
    x, y = (df[df.method == m].set_index('seed')[col] for m in (a, b))
    d = 100 * (x - y).dropna()
    if len(d) < 2: return f'{d.mean():+.1f}' if len(d) else '', len(d)
    h = stats.t.ppf(0.975, len(d) - 1) * d.std() / np.sqrt(len(d))
    return f'{d.mean():+.1f} [{d.mean() - h:+.1f}, {d.mean() + h:+.1f}]', len(d)


def cost(df, m):
    d = df[df.method == m]
    if m.endswith('(no stage)'): r = (d.last_natural_s - d.natural_epoch_s) / d.natural_epoch_s  # the τ pass, inside the last epoch
    else: r = d.stage_s / d.natural_epoch_s
    return f'{r.mean():.2f}' if r.notna().any() else ''


def table(name, df):
    singles = [m for m in SINGLES if m in set(df.method)]
    best = max(singles, key=lambda m: df[df.method == m].balanced_accuracy.mean())
    rows = [f'**{name}**; best single technique: {SINGLES[best]} ({100 * df[df.method == best].balanced_accuracy.mean():.1f})', '',
            '| option | balanced accuracy | minus the default | minus the best single technique | many-shot recall | stage cost (epochs) | seeds |', '|---|---|---|---|---|---|---|']
    for m, label in OPTIONS.items():
        if m not in set(df.method): continue
        d = df[df.method == m]
        vs_def, n = paired(df, m, DEFAULT)
        vs_best, _ = paired(df, m, best)
        rows.append(f'| {label} | {100 * d.balanced_accuracy.mean():.1f} | {"" if m == DEFAULT else vs_def} | {vs_best} | {100 * d.many_shot.mean():.1f} | {cost(df, m)} | {len(d)} |')
    return '\n'.join(rows)


if __name__ == '__main__':
    for name, files in SETS.items(): print(table(name, load(files)) + '\n')


def options_md(i:int)->str:
    "The table of set `i` of `SETS`, as Markdown (the guide and the home page show these)"
    name, files = list(SETS.items())[i]
    return table(name, load(files))
